%% @doc A key registry with the API, results and errors of Elixir's
%% `Registry', stored in core's shared-memory registry (nif/, core/registry)
%% so that a C node on the same host sees the same entries. From Elixir it is
%% `:cnode_registry', and `alias :cnode_registry, as: Registry' lets code
%% written for Registry run unchanged: the same options (keyword lists; maps
%% too), child specification, functions, return values, links, and
%% `ArgumentError' messages (Registry's message text; seen from Erlang, an
%% `#{'__struct__' => 'Elixir.ArgumentError', message => Msg}' error).
%%
%% Two kinds of registries:
%% <ul>
%% <li>{@link start_link/1}: a standalone registry inside this VM. Its top
%%     process is a supervisor registered under the registry's name
%%     (cnode_registry_sup) whose children are the partitions: registering
%%     links the caller to the partition of its pid, and
%%     `dispatch(..., parallel: true)' runs once per partition in processes
%%     of its own (cnode_registry_partitions).</li>
%% <li>{@link attach/2}: the registry of a running C node (its
%%     `cnode_registry' worker, cnode/registry_worker.c). On the same host the
%%     NIF maps the C node's segment; from another host every operation is a
%%     message to the worker. Same API, same results.</li>
%% </ul>
%%
%% Keys and values are any terms, compared as `=:='. An owner's entries go
%% when it dies (the NIF monitors local owners). Reads return in about a
%% millisecond whatever the table size: a result that would take longer to
%% copy is built on a dirty scheduler, and whole-table walks ({@link select/2},
%% {@link count_select/2}) give the scheduler back between batches.
%%
%% Listeners (`listeners' option) get `{register, Reg, Key, Pid, Value}' and
%% `{unregister, Reg, Key, Pid}': sent by the calling process for registrations
%% made in this VM, exactly when Elixir's Registry sends them; for
%% registrations made elsewhere (a C worker, another VM attached to the same C
%% node) they come from the registry's change feed, polled by the attachment
%% process every few milliseconds, and include removals of entries whose owner
%% died or whose node went away.
%%
%% Differences from Elixir's Registry (the one list; docs/ARCHITECTURE.md
%% points here):
%% <ol>
%% <li>An entry can belong to a process of another node: a C worker, or a
%%     process of another VM attached to the same C node. Such entries go
%%     when that process or its node goes.</li>
%% <li>Registering in an attached registry does not link the caller (the
%%     owner returned is the attachment process): a C node going away must
%%     not kill the processes that registered there.</li>
%% <li>-0.0 and 0.0 are one key (as `=:=' has it on OTP 25, and as ETS has
%%     it), and {@link keys/2} returns such a key as 0.0.</li>
%% <li>Keys nest at most 1000 deep and encode to at most 1 MiB, values to at
%%     most 64 MiB; larger ones raise `badarg' (ArgumentError "argument
%%     error"). At most 64 listeners.</li>
%% <li>Partitions are processes only; the entries of all partitions are one
%%     table, held by partition 0. So a lookup lists a key's entries in
%%     registration order, and if partition 0 dies the registry starts over
%%     empty (every partition restarts), where Registry loses that partition
%%     only. `compressed' is checked and has no effect.</li>
%% <li>Messages that name a function name cnode_registry's
%%     (`:cnode_registry.update_value/3 is not supported for duplicate
%%     registries', and every FunctionClauseError); a register_name/2 called
%%     for another process fails in register_name/2 (Registry's internal
%%     register_name/4).</li>
%% <li>`keys: {:duplicate, :key}' (Elixir 1.20's partitioning by key) is
%%     refused with an ArgumentError; `{:duplicate, :pid}' is `:duplicate'
%%     (taken where the installed Registry takes it), and messages name the
%%     kinds as the installed Elixir does.</li>
%% <li>A parallel dispatch whose callback fails exits with
%%     `{Reason, {cnode_registry, dispatch, [Reg, Key]}}' (Registry: the
%%     reason of `Task.await/2').</li>
%% <li>Additions: option maps, the deprecated `start_link/2,3' kept,
%%     {@link lookup_many/2}, {@link attach/3}, {@link detach/1}, and the
%%     `attach' option of {@link child_spec/1}.</li>
%% </ol>
%%
%% Tests: tests/integration/nif_tests.erl,
%% tests/integration/exunit/registry_compat_test.exs,
%% tests/integration/exunit/registry_dropin_test.exs.
-module(cnode_registry).

-export([start_link/1, start_link/2, start_link/3, child_spec/1,
         attach/2, attach/3, detach/1]).
-export([register/3, unregister/2, unregister_match/3, unregister_match/4,
         lookup/2, lookup_many/2, keys/2, values/3, update_value/3, count/1,
         count_match/3, count_match/4, match/3, match/4,
         select/2, count_select/2, dispatch/3, dispatch/4,
         meta/2, put_meta/3, delete_meta/2]).
-export([register_name/2, whereis_name/1, unregister_name/1, send/2]).

-deprecated([{start_link, 2, "use start_link/1"}, {start_link, 3, "use start_link/1"}]).

-export_type([registry/0, key/0, value/0, keys/0, start_options/0, match_pattern/0,
              guards/0, spec/0, dispatcher/0, attach_options/0]).

-type registry() :: atom().
-type key() :: term().
-type value() :: term().
-type keys() :: unique | duplicate.
-type start_options() :: cnode_registry_opts:options().
-type match_pattern() :: atom() | term().
-type guards() :: [atom() | tuple()].
-type spec() :: [{match_pattern(), guards(), [term()]}].
-type dispatcher() :: fun(([{pid(), value()}]) -> term()) | {module(), atom(), [term()]}.
-type attach_options() :: [{atom(), term()}] |
                          #{link => boolean(), listeners => [atom()], timeout => timeout(),
                            mode => auto | shared | remote, wait => boolean()}.
-type via_name() :: {registry(), key()} | {registry(), key(), value()}.

-define(REMOTE, '$cnr_remote').
-define(NIF, cnode_registry_nif).
-define(SCAN_BATCH, 1000).

%% Runs Expr, an operation on registry Reg: a badarg out of it for a name that
%% is no registry becomes Registry's "unknown registry" ArgumentError.
-define(ON(Reg, Expr),
        try Expr catch error:badarg:St__ -> cnode_registry_error:badarg(Reg, St__) end).

%%% ------------------------------------------------------------------ start

%% @doc Starts a standalone registry, linked to the caller; returns its top
%% process (a supervisor registered under `name'). Options as Registry's, in a
%% keyword list or a map: `keys' (`unique' or `duplicate') and `name' (an atom)
%% are required; `partitions' (default 1), `listeners' (registered names told
%% of every register/unregister), `meta' (a keyword list of initial metadata)
%% and `compressed' (a boolean) are optional; others are ignored. A bad option
%% raises Registry's ArgumentError. `{error, {already_started, Pid}}' if the
%% name is taken.
-spec start_link(start_options()) -> {ok, pid()} | {error, term()}.
start_link(Opts) when is_list(Opts); is_map(Opts) ->
    cnode_registry_sup:start_link(cnode_registry_opts:validate(Opts)).

%% @doc Deprecated as in Registry: `start_link([{keys, Keys}, {name, Name}])'.
-spec start_link(keys(), registry()) -> {ok, pid()} | {error, term()}.
start_link(Keys, Name) ->
    start_link(Keys, Name, []).

%% @doc Deprecated as in Registry: `start_link([{keys, Keys}, {name, Name} |
%% Opts])'.
-spec start_link(keys(), registry(), [{atom(), term()}]) -> {ok, pid()} | {error, term()}.
start_link(Keys, Name, Opts) when is_list(Opts) ->
    start_link([{keys, Keys}, {name, Name} | Opts]).

%% @doc A child specification as Registry's: `{:cnode_registry, keys:
%% :unique, name: MyReg}' in an Elixir supervision tree. The id is the name
%% (`cnode_registry' without one), the type `supervisor'.
%%
%% With an `attach' option, `{:cnode_registry, name: MyReg, attach: cnode}',
%% the child is the attachment of the C node's registry instead (attach/3
%% with `listeners', `timeout' and `mode' taken from the options): a permanent
%% worker whose restart, after the C node went away, waits up to `timeout'
%% ms (15000) for cnode_bridge to restart it (see
%% cnode_registry_attach:child_spec/3).
-spec child_spec(start_options()) -> supervisor:child_spec().
child_spec(Opts) when is_list(Opts); is_map(Opts) ->
    case attach_of(Opts) of
        {ok, CNode} ->
            cnode_registry_attach:child_spec(proplists_get(name, Opts, ?MODULE), CNode, Opts);
        error ->
            cnode_registry_opts:child_spec(Opts)
    end.

attach_of(Opts) when is_map(Opts) -> maps:find(attach, Opts);
attach_of(Opts) ->
    case lists:keyfind(attach, 1, Opts) of
        {attach, CNode} -> {ok, CNode};
        false -> error
    end.

proplists_get(Key, Opts, Default) when is_map(Opts) -> maps:get(Key, Opts, Default);
proplists_get(Key, Opts, Default) ->
    case lists:keyfind(Key, 1, Opts) of
        {Key, V} -> V;
        false -> Default
    end.

%% @doc Same as `attach(Name, CNode, [])': linked to the caller.
-spec attach(registry(), node()) -> {ok, pid()} | {error, term()}.
attach(Name, CNode) ->
    attach(Name, CNode, #{}).

%% @doc Makes the registry of the running C node `CNode' available here under
%% the name `Name'. Starts an attachment process registered as `Name'. On the
%% same host the C node's segment is mapped (the fast path); otherwise
%% operations are messages to the C node's `cnode_registry' worker. Opts, a
%% keyword list or a map:
%% <ul>
%% <li>`link' (default `true'): link the attachment to the caller, as a
%%     start_link function does. With `false' nothing is linked: the C node
%%     going away ends the attachment only, never the caller (in iex:
%%     `:cnode_registry.attach(MyReg, cnode, link: false)'), and the
%%     attachment outlives the caller, until detach/1 or the C node's end. To keep an
%%     attachment in an application's supervision tree, give it the child
%%     spec that child_spec/1 makes of `[{name, Name}, {attach, CNode}]'.</li>
%% <li>`listeners' (as in start_link/1), `timeout' (ms to reach the C node,
%%     default 5000), `mode' (`auto' (default), `shared' or `remote');</li>
%% <li>`wait' (default `false'): if the C node cannot be reached, try again
%%     until `timeout' has passed (the child spec sets it, so a restart
%%     waits for a C node that cnode_bridge is restarting).</li>
%% </ul>
%%
%% Errors: `{error, {cnode_unreachable, CNode}}' (no connection),
%% `{error, {no_registry, CNode}}' (no `cnode_registry' worker there),
%% `{error, {segment, Reason}}' (the segment could not be mapped in `shared'
%% mode), `{error, {already_started, Pid}}', `{error, not_distributed}',
%% `{error, {bad_option, Opt}}'.
%%
%% When the C node dies or the connection drops, its entries vanish from this
%% view and the attachment stops with reason `{shutdown, {cnode_down, CNode}}'
%% (a linked caller that does not trap exits stops too). When this VM dies or
%% detaches, the C node purges this node's entries.
-spec attach(registry(), node(), attach_options()) -> {ok, pid()} | {error, term()}.
attach(Name, CNode, Opts0) when is_atom(Name), is_atom(CNode) ->
    case cnode_registry_attach:options(Opts0) of
        {ok, Opts} ->
            %% Reachability is checked here, in the caller, so that a C node
            %% that cannot be reached gives an {error, Reason} rather than a
            %% linked exit.
            case cnode_registry_attach:probe(CNode, Opts) of
                {ok, Info} -> cnode_registry_attach:start(Name, CNode, Info, Opts);
                {error, _} = E -> E
            end;
        {error, _} = E -> E
    end.

%% @doc Ends an attachment made with attach/2,3: this node's entries are purged
%% on the C node and the name goes. `ok' also when `Name' is not attached.
-spec detach(registry()) -> ok.
detach(Name) when is_atom(Name) ->
    case whereis(Name) of
        undefined -> ok;
        Pid ->
            %% It may be stopping already (its linked parent exited).
            try gen_server:stop(Pid, normal, 10000)
            catch exit:Reason ->
                    case is_process_alive(Pid) of
                        false -> ok;
                        true -> exit(Reason)
                    end
            end
    end.

%%% ------------------------------------------------------------------ writes

%% @doc Registers the calling process under `Key' with `Value'. Unique
%% registries: `{error, {already_registered, Owner}}' if the key is taken
%% (also by the caller). Duplicate registries always register. Returns
%% `{ok, Owner}': in a standalone registry the partition process that owns the
%% caller's entries, now linked to the caller (as Registry's); in an attached
%% one the attachment process (not linked).
-spec register(registry(), key(), value()) ->
          {ok, pid()} | {error, {already_registered, pid()}} | {error, atom()}.
register(Reg, Key, Value) when is_atom(Reg) ->
    ?ON(Reg, case ?NIF:register(Reg, Key, Value) of
                 ?REMOTE -> cnode_registry_attach:remote(Reg, {register, Key, self(), Value});
                 {ok, Server} ->
                     case cnode_registry_partitions:registered(Reg) of
                         none -> {ok, Server};
                         Owner -> {ok, Owner}
                     end;
                 R -> R
             end).

%% @doc Removes every entry of the caller under `Key'; unlinks the caller from
%% its partition when it has no entry left in the registry. Always `ok'.
-spec unregister(registry(), key()) -> ok.
unregister(Reg, Key) when is_atom(Reg) ->
    ?ON(Reg, begin
                 Owner = cnode_registry_partitions:owner(Reg),
                 Held = case Owner of
                            none -> 0;
                            _ -> length(values(Reg, Key, self()))
                        end,
                 R = case ?NIF:unregister(Reg, Key) of
                         ?REMOTE -> cnode_registry_attach:remote(Reg, {unregister, Key, self()});
                         R0 -> R0
                     end,
                 case R of
                     ok -> cnode_registry_partitions:unregistered(Owner, Held);
                     {error, Reason} -> erlang:error({cnode_registry, Reason}, [Reg, Key])
                 end
         end).

%% @doc Same as `unregister_match(Reg, Key, Pattern, [])'.
-spec unregister_match(registry(), key(), match_pattern()) -> ok.
unregister_match(Reg, Key, Pattern) ->
    unregister_match(Reg, Key, Pattern, []).

%% @doc Removes the caller's entries under `Key' whose value matches the ETS
%% match pattern `Pattern' with `Guards'. Listeners hear `unregister' only when
%% every entry of the caller under the key went (as with Elixir's Registry);
%% the caller is unlinked as by unregister/2. Always `ok'.
-spec unregister_match(registry(), key(), match_pattern(), guards()) -> ok.
unregister_match(Reg, Key, Pattern, Guards) when is_atom(Reg), is_list(Guards) ->
    ?ON(Reg, unregister_match_(Reg, Key, Pattern, Guards)).

unregister_match_(Reg, Key, Pattern, Guards) ->
    Self = self(),
    Values = values(Reg, Key, Self),
    Spec = [{{'_', {Self, Pattern}}, [key_guard(Key) | Guards], ['$_']}],
    Matched = [V || {_, {_, V}} <- run_spec(Reg, Spec, [{Key, {Self, V}} || V <- Values])],
    Owner = cnode_registry_partitions:owner(Reg),
    case {Values, Matched} of
        {[], []} ->
            notify_unregister(Reg, Key),
            cnode_registry_partitions:unregistered(Owner, 0);
        {_, []} ->
            ok;
        _ ->
            Removed = remove_values(Reg, Key, Matched),
            case length(Matched) =:= length(Values) of
                true -> notify_unregister(Reg, Key);
                false -> ok
            end,
            cnode_registry_partitions:unregistered(Owner, Removed)
    end.

remove_values(Reg, Key, Values) ->
    R = case ?NIF:unregister_values(Reg, Key, Values) of
            ?REMOTE -> cnode_registry_attach:remote(Reg, {unregister_values, Key, self(), Values});
            R0 -> R0
        end,
    case R of
        N when is_integer(N) -> N;
        {error, Reason} -> erlang:error({cnode_registry, Reason}, [Reg, Key])
    end.

notify_unregister(Reg, Key) ->
    case ?NIF:notify_unregister(Reg, Key) of
        ?REMOTE -> cnode_registry_attach:notify(Reg, {unregister, Reg, Key, self()});
        ok -> ok
    end.

%% @doc Replaces the value of the caller's entry under `Key' by
%% `Callback(Old)'. Returns `{New, Old}', or `error' if the caller has no entry
%% there. Unique registries only (ArgumentError on a duplicate one).
-spec update_value(registry(), key(), fun((value()) -> value())) ->
          {New :: value(), Old :: value()} | error.
update_value(Reg, Key, Callback) when is_atom(Reg), is_function(Callback, 1) ->
    ?ON(Reg, update_value_(Reg, Key, Callback)).

update_value_(Reg, Key, Callback) ->
    case ?NIF:info(Reg) of
        #{kind := unique} -> ok;
        #{} -> cnode_registry_error:argument_error(
                 [cnode_registry_error:inspect(?MODULE),
                  ".update_value/3 is not supported for ",
                  cnode_registry_opts:duplicate_text(), " registries"])
    end,
    case values(Reg, Key, self()) of
        [Old] ->
            New = Callback(Old),
            R = case ?NIF:update_value(Reg, Key, New) of
                    ?REMOTE -> cnode_registry_attach:remote(Reg, {update_value, Key, self(), New});
                    Other -> Other
                end,
            case R of
                ok -> {New, Old};
                error -> error;
                {error, Reason} -> erlang:error({cnode_registry, Reason}, [Reg, Key, Callback])
            end;
        _ ->
            error
    end.

%%% ------------------------------------------------------------------ reads

%% @doc Every `{Pid, Value}' registered under `Key' (in registration order).
-spec lookup(registry(), key()) -> [{pid(), value()}].
lookup(Reg, Key) when is_atom(Reg) ->
    ?ON(Reg, case ?NIF:lookup(Reg, Key) of
                 ?REMOTE -> cnode_registry_attach:remote(Reg, {lookup, Key});
                 R -> R
             end).

%% @doc `[lookup(Reg, K) || K <- Keys]', in one native call per 256 keys: the
%% keys' memory reads overlap (cnb_registry_lookup_many), which is several
%% times faster than one lookup per key when the registry is too big for the
%% CPU caches. Each key's list is read consistently; the lists are not one
%% snapshot of the whole registry. A registry attached from another host
%% answers key by key. Not in Elixir's Registry.
-define(MANY_CHUNK, 256). % the NIF's limit per call

-spec lookup_many(registry(), [key()]) -> [[{pid(), value()}]].
lookup_many(Reg, Keys) when is_atom(Reg), is_list(Keys) ->
    ?ON(Reg, case length(Keys) =< ?MANY_CHUNK of % badarg for an improper list
                 true -> many_chunk(Reg, Keys);
                 false -> many_chunks(Reg, Keys, [])
             end).

many_chunk(Reg, Keys) ->
    case ?NIF:lookup_many(Reg, Keys) of
        ?REMOTE -> [lookup(Reg, K) || K <- Keys];
        L -> L
    end.

many_chunks(_Reg, [], Acc) ->
    lists:append(lists:reverse(Acc));
many_chunks(Reg, Keys, Acc) ->
    {Chunk, Rest} = take(Keys, ?MANY_CHUNK, []),
    many_chunks(Reg, Rest, [many_chunk(Reg, Chunk) | Acc]).

%% @doc The keys `Pid' is registered under (order unspecified; a key appears
%% once per entry in a duplicate registry).
-spec keys(registry(), pid()) -> [key()].
keys(Reg, Pid) when is_atom(Reg), is_pid(Pid) ->
    ?ON(Reg, case ?NIF:keys(Reg, Pid) of
                 ?REMOTE -> cnode_registry_attach:remote(Reg, {keys, Pid});
                 R -> R
             end).

%% @doc The values `Pid' registered under `Key' (none for what is no pid).
-spec values(registry(), key(), pid()) -> [value()].
values(Reg, Key, Pid) when is_atom(Reg), is_pid(Pid) ->
    ?ON(Reg, case ?NIF:values(Reg, Key, Pid) of
                 ?REMOTE -> cnode_registry_attach:remote(Reg, {values, Key, Pid});
                 R -> R
             end);
values(Reg, _Key, _NotPid) when is_atom(Reg) ->
    _ = ?ON(Reg, ?NIF:info(Reg)),
    [].

%% @doc The number of entries (O(1)).
-spec count(registry()) -> non_neg_integer().
count(Reg) when is_atom(Reg) ->
    ?ON(Reg, case ?NIF:count(Reg) of
                 ?REMOTE -> cnode_registry_attach:remote(Reg, count);
                 N -> N
             end).

%% @doc Same as `count_match(Reg, Key, Pattern, [])'.
-spec count_match(registry(), key(), match_pattern()) -> non_neg_integer().
count_match(Reg, Key, Pattern) ->
    count_match(Reg, Key, Pattern, []).

%% @doc How many entries under `Key' have a value matching `Pattern' and
%% `Guards' (ETS match pattern: `` '_' '', `` '$1' ''..., literals).
-spec count_match(registry(), key(), match_pattern(), guards()) -> non_neg_integer().
count_match(Reg, Key, Pattern, Guards) when is_atom(Reg), is_list(Guards) ->
    MS = compile(Reg, [{{'_', {'_', Pattern}}, [key_guard(Key) | Guards], [true]}]),
    ?ON(Reg, fold_key(Reg, Key, fun(Objs, N) -> N + length(ets:match_spec_run(Objs, MS)) end, 0)).

%% @doc Same as `match(Reg, Key, Pattern, [])'.
-spec match(registry(), key(), match_pattern()) -> [{pid(), term()}].
match(Reg, Key, Pattern) ->
    match(Reg, Key, Pattern, []).

%% @doc The `{Pid, Value}' entries under `Key' whose value matches `Pattern'
%% and `Guards'.
-spec match(registry(), key(), match_pattern(), guards()) -> [{pid(), term()}].
match(Reg, Key, Pattern, Guards) when is_atom(Reg), is_list(Guards) ->
    MS = compile(Reg, [{{'_', {'_', Pattern}}, [key_guard(Key) | Guards], [{element, 2, '$_'}]}]),
    Parts = ?ON(Reg, fold_key(Reg, Key, fun(Objs, Acc) ->
                                                [ets:match_spec_run(Objs, MS) | Acc]
                                        end, [])),
    lists:append(lists:reverse(Parts)).

%% @doc Runs a match specification over every entry, seen as `{Key, Pid,
%% Value}' in the heads (`` '$_' '' in a body is `{Key, {Pid, Value}}', as in
%% Elixir's Registry). The walk gives the scheduler back between batches.
-spec select(registry(), spec()) -> [term()].
select(Reg, []) when is_atom(Reg) ->
    _ = ?ON(Reg, ?NIF:info(Reg)),
    [];
select(Reg, Spec) when is_atom(Reg), is_list(Spec) ->
    MS = compile_select(Reg, Spec, select),
    Batches = ?ON(Reg, fold_entries(Reg, fun(Batch, Acc) ->
                                                 [ets:match_spec_run(Batch, MS) | Acc]
                                         end, [])),
    lists:append(lists:reverse(Batches)).

%% @doc How many entries the match specification returns `true' for.
-spec count_select(registry(), spec()) -> non_neg_integer().
count_select(Reg, []) when is_atom(Reg) ->
    _ = ?ON(Reg, ?NIF:info(Reg)),
    0;
count_select(Reg, Spec) when is_atom(Reg), is_list(Spec) ->
    MS = compile_select(Reg, Spec, count_select),
    ?ON(Reg, fold_entries(Reg, fun(Batch, Acc) ->
                                       Acc + length([T || T <- ets:match_spec_run(Batch, MS),
                                                          T =:= true])
                               end, 0)).

%% @doc Same as `dispatch(Reg, Key, Dispatcher, [])'.
-spec dispatch(registry(), key(), dispatcher()) -> ok.
dispatch(Reg, Key, Dispatcher) ->
    dispatch(Reg, Key, Dispatcher, []).

%% @doc Calls `Dispatcher' with the entries under `Key' (`{M, F, A}' is called
%% as `apply(M, F, [Entries | A])'), unless there are none: in the caller,
%% once; in a duplicate registry of several partitions once per partition that
%% has entries, each in a process of its own with `{parallel, true}' in `Opts'
%% (cnode_registry_partitions). Always `ok'.
-spec dispatch(registry(), key(), dispatcher(), term()) -> ok.
dispatch(Reg, Key, Dispatcher, Opts) when is_atom(Reg),
                                         (is_function(Dispatcher, 1) orelse
                                          tuple_size(Dispatcher) =:= 3) ->
    Fun = case Dispatcher of
              {M, F, A} -> fun(Entries) -> apply(M, F, [Entries | A]) end;
              _ -> Dispatcher
          end,
    cnode_registry_partitions:dispatch(Reg, Key, lookup(Reg, Key), Fun, Opts).

%%% ------------------------------------------------------------------ meta

%% @doc Registry metadata under `Key' (an atom or a tuple).
-spec meta(registry(), atom() | tuple()) -> {ok, term()} | error.
meta(Reg, Key) when is_atom(Reg), is_atom(Key) orelse is_tuple(Key) ->
    try ?NIF:meta(Reg, Key) of
        ?REMOTE -> cnode_registry_attach:remote(Reg, {meta, Key});
        R -> R
    catch error:badarg:St -> cnode_registry_error:badarg(Reg, St, meta)
    end.

%% @doc Sets registry metadata. Always `ok'.
-spec put_meta(registry(), atom() | tuple(), term()) -> ok.
put_meta(Reg, Key, Value) when is_atom(Reg), is_atom(Key) orelse is_tuple(Key) ->
    ?ON(Reg, begin
             R = case ?NIF:put_meta(Reg, Key, Value) of
                     ?REMOTE -> cnode_registry_attach:remote(Reg, {put_meta, Key, Value});
                     R0 -> R0
                 end,
             case R of
                 ok -> ok;
                 {error, Reason} -> erlang:error({cnode_registry, Reason}, [Reg, Key, Value])
             end
         end).

%% @doc Removes registry metadata. Always `ok'.
-spec delete_meta(registry(), atom() | tuple()) -> ok.
delete_meta(Reg, Key) when is_atom(Reg), is_atom(Key) orelse is_tuple(Key) ->
    ?ON(Reg, begin
             R = case ?NIF:delete_meta(Reg, Key) of
                     ?REMOTE -> cnode_registry_attach:remote(Reg, {delete_meta, Key});
                     R0 -> R0
                 end,
             case R of
                 ok -> ok;
                 {error, Reason} -> erlang:error({cnode_registry, Reason}, [Reg, Key])
             end
         end).

%%% ------------------------------------------------------------------ :via

%% @doc `:via' callback: registers `Pid' (which must be the caller) under
%% `{Reg, Key}' (value `nil', as Elixir's Registry) or `{Reg, Key, Value}'.
-spec register_name(via_name(), pid()) -> yes | no.
register_name({Reg, Key}, Pid) when Pid =:= self() ->
    register_name({Reg, Key, nil}, Pid);
register_name({Reg, Key, Value}, Pid) when Pid =:= self() ->
    case register(Reg, Key, Value) of
        {ok, _} -> yes;
        {error, _} -> no
    end.

%% @doc `:via' callback: the process under `{Reg, Key}', or `undefined'.
%% Unique registries only (ArgumentError on a duplicate one).
-spec whereis_name(via_name()) -> pid() | undefined.
whereis_name({Reg, Key}) -> whereis_name(Reg, Key);
whereis_name({Reg, Key, _Value}) -> whereis_name(Reg, Key).

whereis_name(Reg, Key) ->
    case ?ON(Reg, ?NIF:info(Reg)) of
        #{kind := unique} -> ok;
        #{} -> cnode_registry_error:argument_error(
                 ":via is not supported for duplicate registries")
    end,
    case lookup(Reg, Key) of
        [{Pid, _}] when node(Pid) =:= node() ->
            case is_process_alive(Pid) of
                true -> Pid;
                false -> undefined
            end;
        [{Pid, _}] -> Pid;
        [] -> undefined
    end.

%% @doc `:via' callback: unregisters the caller from `{Reg, Key}'.
-spec unregister_name(via_name()) -> ok.
unregister_name({Reg, Key}) -> unregister(Reg, Key);
unregister_name({Reg, Key, _Value}) -> unregister(Reg, Key).

%% @doc `:via' callback: sends `Msg' to the process under `{Reg, Key}'
%% (raises `badarg' if there is none). Returns `Msg'.
-spec send(via_name(), term()) -> term().
send({Reg, Key}, Msg) ->
    case lookup(Reg, Key) of
        [{Pid, _}] -> erlang:send(Pid, Msg);
        _ -> erlang:error(badarg, [{Reg, Key}, Msg])
    end;
send({Reg, Key, _Value}, Msg) ->
    send({Reg, Key}, Msg).

%%% ------------------------------------------------------------------ internals

key_guard(Key) ->
    {'=:=', {element, 1, '$_'}, {const, Key}}.

objects(Entries, Key) ->
    [{Key, PV} || PV <- Entries].

%% Folds Fun over the entries of Key as {Key, {Pid, Value}} objects, at most
%% ?SCAN_BATCH at a time: a key with a great many entries is copied once into a
%% snapshot in the NIF and handed out in slices, so that no single call (nor
%% one huge list) holds the scheduler.
fold_key(Reg, Key, Fun, Acc) ->
    case ?NIF:lookup_open(Reg, Key, ?SCAN_BATCH) of
        ?REMOTE -> Fun(objects(cnode_registry_attach:remote(Reg, {lookup, Key}), Key), Acc);
        {Entries, done} -> Fun(objects(Entries, Key), Acc);
        {Entries, Snap} -> fold_snap(Snap, Key, Fun, Fun(objects(Entries, Key), Acc))
    end.

fold_snap(Snap, Key, Fun, Acc) ->
    case ?NIF:lookup_next(Snap, ?SCAN_BATCH) of
        {Entries, done} -> Fun(objects(Entries, Key), Acc);
        {Entries, Snap} -> fold_snap(Snap, Key, Fun, Fun(objects(Entries, Key), Acc))
    end.

%% A compiled match specification, or Registry's error for a bad one.
compile(Reg, Spec) ->
    try ets:match_spec_compile(Spec)
    catch error:badarg -> cnode_registry_error:bad_spec(Reg)
    end.

%% Runs a match spec over objects in batches (each ets:match_spec_run call is
%% one BIF call; batches keep it short).
run_spec(Reg, Spec, Objects) ->
    run_batches(compile(Reg, Spec), Objects, []).

run_batches(_MS, [], Acc) ->
    lists:append(lists:reverse(Acc));
run_batches(MS, Objects, Acc) ->
    {Batch, Rest} = take(Objects, ?SCAN_BATCH, []),
    run_batches(MS, Rest, [ets:match_spec_run(Batch, MS) | Acc]).

take(Rest, 0, Acc) -> {lists:reverse(Acc), Rest};
take([], _, Acc) -> {lists:reverse(Acc), []};
take([X | Rest], N, Acc) -> take(Rest, N - 1, [X | Acc]).

%% A select/count_select spec: each part's head must be a {Key, Pid, Value}
%% pattern (Registry's "invalid match specification" otherwise); ETS judges
%% the rest.
compile_select(Reg, Spec, Fun) ->
    Grouped = [case Part of
                   {{K, P, V}, Guards, Body} -> {{K, {P, V}}, Guards, Body};
                   _ ->
                       _ = ?ON(Reg, ?NIF:info(Reg)),
                       cnode_registry_error:argument_error(
                         ["invalid match specification in ",
                          cnode_registry_error:inspect(?MODULE), ".",
                          atom_to_list(Fun), "/2: ", cnode_registry_error:inspect(Spec)])
               end || Part <- Spec],
    compile(Reg, Grouped).

%% Walks every entry in batches of {Key, {Pid, Value}} objects.
fold_entries(Reg, Fun, Acc0) ->
    fold_entries(Reg, 0, Fun, Acc0).

fold_entries(Reg, Cursor, Fun, Acc) ->
    {Batch, Next} = case ?NIF:scan(Reg, Cursor, ?SCAN_BATCH) of
                        ?REMOTE -> cnode_registry_attach:remote(Reg, {scan, Cursor, ?SCAN_BATCH});
                        R -> R
                    end,
    Acc1 = Fun([{K, {P, V}} || {K, P, V} <- Batch], Acc),
    case Next of
        done -> Acc1;
        _ -> fold_entries(Reg, Next, Fun, Acc1)
    end.
