%% @doc The attachment of a C node's registry (cnode_registry:attach/2,3): a
%% process registered under the registry's name (linked to the caller, or to
%% no one with `link: false'; as a supervisor's child, child_spec/3) that
%% <ul>
%% <li>tells the C node's `cnode_registry' worker it is attached (the worker
%%     monitors it and purges this node's entries when it goes, whether by
%%     detach, crash, or this VM's death);</li>
%% <li>maps the C node's segment through the NIF when both run on one host
%%     (`shared' mode), or names the registry in `remote' mode, where every
%%     operation is a gen_server call to the worker (remote/2);</li>
%% <li>monitors the worker: when the C node dies or the connection drops, the
%%     C node's entries leave this view and the attachment stops with
%%     `{shutdown, {cnode_down, CNode}}';</li>
%% <li>polls the change feed every ?POLL_MS ms when there are listeners, and
%%     tells them of registrations whose owner lives on another node (those of
%%     this node are told by the registering process itself).</li>
%% </ul>
%% The worker's protocol (gen_server calls to `{cnode_registry, CNode}') is
%% described in cnode/registry_worker.h. Tests: tests/integration/nif_tests.erl.
-module(cnode_registry_attach).
-behaviour(gen_server).

-export([options/1, probe/2, start/4, child_spec/3, remote/2, notify/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-define(WORKER, cnode_registry).
-define(POLL_MS, 10).
-define(FEED_MAX, 256).
-define(CALL_TIMEOUT, 15000).
-define(RESTART_WAIT, 15000).

-record(st, {name :: atom(),
             cnode :: node(),
             mode :: shared | remote,
             mon :: reference(),
             listeners :: [atom()],
             os_pid :: integer() | undefined,
             path = <<>> :: binary(),
             pos = 0 :: non_neg_integer(),
             down = false :: boolean()}).

%% @doc attach/3's options (a keyword list or a map) as a map with the
%% defaults; `{error, {bad_option, Opt}}' for an unknown or ill-typed one.
-spec options(term()) -> {ok, map()} | {error, {bad_option, term()}}.
options(Opts) when is_list(Opts) ->
    case is_keyword(Opts) of
        %% foldr: the first value of a key counts, as with Keyword.get/2.
        true -> options(lists:foldr(fun({K, V}, M) -> M#{K => V} end, #{}, Opts));
        false -> {error, {bad_option, Opts}}
    end;
options(Opts) when is_map(Opts) ->
    case [KV || KV <- maps:to_list(Opts), not option_ok(KV)] of
        [] -> {ok, maps:merge(#{link => true, listeners => [], timeout => 5000,
                                mode => auto, wait => false}, Opts)};
        [Bad | _] -> {error, {bad_option, Bad}}
    end;
options(Opts) ->
    {error, {bad_option, Opts}}.

is_keyword([]) -> true;
is_keyword([{K, _} | T]) when is_atom(K) -> is_keyword(T);
is_keyword(_) -> false.

option_ok({link, B}) -> is_boolean(B);
option_ok({wait, B}) -> is_boolean(B);
option_ok({listeners, Ls}) -> is_list(Ls) andalso lists:all(fun is_atom/1, Ls);
option_ok({timeout, T}) -> T =:= infinity orelse (is_integer(T) andalso T >= 0);
option_ok({mode, M}) -> lists:member(M, [auto, shared, remote]);
option_ok(_) -> false.

%% @doc Connects to CNode and asks its registry worker for `info' within the
%% `timeout' of Opts; with `wait', tries again every 100 ms until then.
%% Returns the worker's info map, or a clear error.
-spec probe(node(), map()) -> {ok, map()} | {error, term()}.
probe(CNode, #{timeout := Timeout, wait := Wait}) ->
    Deadline = case Timeout of
                   infinity -> infinity;
                   _ -> erlang:monotonic_time(millisecond) + Timeout
               end,
    probe(CNode, Timeout, Wait, Deadline).

probe(CNode, Timeout, Wait, Deadline) ->
    case probe_once(CNode, Timeout) of
        {error, not_distributed} = E -> E;
        {error, _} = E when Wait ->
            case Deadline =/= infinity andalso
                erlang:monotonic_time(millisecond) + 100 > Deadline of
                true -> E;
                false -> timer:sleep(100), probe(CNode, Timeout, Wait, Deadline)
            end;
        R -> R
    end.

probe_once(CNode, Timeout) ->
    case net_kernel:connect_node(CNode) of
        true ->
            try gen_server:call({?WORKER, CNode}, info, Timeout) of
                {ok, Info} when is_map(Info) -> {ok, Info};
                Other -> {error, {bad_reply, Other}}
            catch
                exit:{noproc, _} -> {error, {no_registry, CNode}};
                exit:{{nodedown, _}, _} -> {error, {cnode_unreachable, CNode}};
                exit:{timeout, _} -> {error, {timeout, CNode}};
                exit:{Reason, _} -> {error, {cnode_unreachable, CNode, Reason}}
            end;
        false -> {error, {cnode_unreachable, CNode}};
        ignored -> {error, not_distributed}
    end.

%% @doc Starts the attachment process (registered as Name; linked to the
%% caller when Opts says `link') once probe/2 succeeded.
-spec start(atom(), node(), map(), map()) -> {ok, pid()} | {error, term()}.
start(Name, CNode, Info, Opts = #{link := true}) ->
    gen_server:start_link({local, Name}, ?MODULE, {Name, CNode, Info, Opts}, []);
start(Name, CNode, Info, Opts = #{link := false}) ->
    gen_server:start({local, Name}, ?MODULE, {Name, CNode, Info, Opts}, []).

%% @doc The child spec of an attachment (cnode_registry:child_spec/1 with an
%% `attach' option): a permanent worker with the registry's name as id,
%% started linked by attach/3 with `wait', so that after the C node went away
%% its restart waits (up to `timeout') for cnode_bridge to bring it back and
%% attaches to the new one (`timeout' defaults to 15000 here). Of Opts only `listeners', `timeout' and `mode'
%% are passed on (the Registry options beside them are not attach's).
-spec child_spec(atom(), node(), [{atom(), term()}] | map()) -> supervisor:child_spec().
child_spec(Name, CNode, Opts) ->
    Given = maps:with([listeners, timeout, mode],
                      if is_map(Opts) -> Opts;
                         true -> maps:from_list(lists:reverse(Opts))
                      end),
    Pass = maps:merge(#{timeout => ?RESTART_WAIT}, Given),
    #{id => Name,
      start => {cnode_registry, attach, [Name, CNode, Pass#{link => true, wait => true}]},
      restart => permanent,
      shutdown => 5000,
      type => worker,
      modules => [?MODULE]}.

%% @doc Runs an operation of a `remote' registry as a call to the C node's
%% worker, with the same results as the NIF gives locally (both run core's
%% operation layer): a read's failure, `{error, {cnode_registry, Reason}}' from
%% the worker, is raised as the NIF raises it, and `{error, badarg}' raises
%% `badarg'. Tells listeners of the caller's own registrations.
-spec remote(atom(), tuple() | count) -> term().
remote(Reg, Op) ->
    #{cnode := CNode, listeners := Ls, server := Proxy} = cnode_registry_nif:info(Reg),
    R = gen_server:call({?WORKER, CNode}, Op, ?CALL_TIMEOUT),
    case {Op, R} of
        {{register, Key, Pid, Value}, {ok, _}} ->
            send_all(Ls, {register, Reg, Key, Pid, Value}),
            {ok, Proxy};
        {{unregister, Key, Pid}, ok} ->
            send_all(Ls, {unregister, Reg, Key, Pid}),
            ok;
        {_, {error, {cnode_registry, Reason}}} ->
            erlang:error({cnode_registry, Reason}, [Reg, Op]);
        {_, {error, badarg}} ->
            erlang:error(badarg, [Reg, Op]);
        _ ->
            R
    end.

%% @doc Sends Msg to the listeners of registry Reg.
-spec notify(atom(), tuple()) -> ok.
notify(Reg, Msg) ->
    #{listeners := Ls} = cnode_registry_nif:info(Reg),
    send_all(Ls, Msg).

send_all(Listeners, Msg) ->
    _ = [Pid ! Msg || L <- Listeners, Pid <- [whereis(L)], is_pid(Pid)],
    ok.

%%% ------------------------------------------------------------------ server

-spec init({atom(), node(), map(), map()}) -> {ok, #st{}} | {stop, term()}.
init({Name, CNode, Info0, Opts}) ->
    process_flag(trap_exit, true),
    #{listeners := Listeners, timeout := Timeout} = Opts,
    Mon = erlang:monitor(process, {?WORKER, CNode}),
    Info = case call_worker(CNode, {attach, self()}, Timeout) of
               {ok, I} when is_map(I) -> I;
               _ -> Info0
           end,
    St0 = #st{name = Name, cnode = CNode, mon = Mon, listeners = Listeners,
              os_pid = maps:get(os_pid, Info, undefined), mode = remote,
              path = maps:get(path, Info, <<>>)},
    case open(Name, CNode, Info, Listeners, maps:get(mode, Opts)) of
        {ok, Mode} ->
            St = St0#st{mode = Mode},
            Pos = case Listeners of
                      [] -> 0;
                      _ -> erlang:send_after(?POLL_MS, self(), poll), feed_head(St)
                  end,
            {ok, St#st{pos = Pos}};
        {error, Reason} ->
            _ = call_worker(CNode, {detach, self()}, Timeout),
            {stop, Reason}
    end.

open(Name, CNode, Info, Listeners, Mode) ->
    Kind = maps:get(kind, Info, unique),
    Path = maps:get(path, Info, <<>>),
    SameHost = maps:get(host, Info, undefined) =:= hostname() andalso
        filelib:is_regular(Path),
    case Mode of
        remote -> add_remote(Name, Kind, Listeners, CNode);
        _ when SameHost ->
            case cnode_registry_nif:attach(Name, Path, Listeners, CNode,
                                           atom_to_binary(node(), utf8),
                                           erlang:system_info(creation)) of
                {ok, _Kind} -> {ok, shared};
                {error, Reason} when Mode =:= shared -> {error, {segment, Reason}};
                {error, _} -> add_remote(Name, Kind, Listeners, CNode)
            end;
        shared -> {error, {segment, not_on_this_host}};
        auto -> add_remote(Name, Kind, Listeners, CNode)
    end.

add_remote(Name, Kind, Listeners, CNode) ->
    case cnode_registry_nif:add_remote(Name, Kind, Listeners, CNode) of
        ok -> {ok, remote};
        {error, _} = E -> E
    end.

hostname() ->
    {ok, H} = inet:gethostname(),
    list_to_binary(H).

-spec handle_call(term(), gen_server:from(), #st{}) -> {reply, term(), #st{}}.
handle_call(mode, _From, St) ->
    {reply, St#st.mode, St};
handle_call(_Req, _From, St) ->
    {reply, {error, unknown_call}, St}.

-spec handle_cast(term(), #st{}) -> {noreply, #st{}}.
handle_cast(_Msg, St) ->
    {noreply, St}.

-spec handle_info(term(), #st{}) -> {noreply, #st{}} | {stop, term(), #st{}}.
handle_info({'DOWN', Mon, process, _, _Reason}, #st{mon = Mon} = St) ->
    purge(St),
    {stop, {shutdown, {cnode_down, St#st.cnode}}, St#st{down = true}};
handle_info({'$cnr_owner_down', Name, Pid}, St = #st{name = Name}) ->
    %% A local owner with many entries died: purged here, in a dirty NIF.
    _ = cnode_registry_nif:remove_owner(Name, Pid),
    {noreply, St};
handle_info(poll, St) ->
    St1 = poll(St),
    erlang:send_after(?POLL_MS, self(), poll),
    {noreply, St1};
handle_info(_Msg, St) ->
    {noreply, St}.

-spec terminate(term(), #st{}) -> ok.
terminate(_Reason, #st{down = Down, cnode = CNode, name = Name}) ->
    _ = Down orelse call_worker(CNode, {detach, self()}, 5000),
    cnode_registry_nif:drop(Name).

%% The C node is gone: its entries leave this view. In shared mode they are
%% removed from the segment only if its OS process is gone too (a dropped
%% connection to a live C node on this host must not erase its registrations
%% from its own view; it purges ours instead; a C node killed with SIGKILL is
%% still exiting, not yet a zombie, when its connection drops: that counts as
%% gone, see cnb_registry_os_pid_alive); then the segment file, which a
%% killed C node could not remove, goes too (mappings stay valid).
purge(#st{mode = shared, name = Name, cnode = CNode, os_pid = OsPid, path = Path}) ->
    case is_integer(OsPid) andalso cnode_registry_nif:os_pid_alive(OsPid) of
        true -> ok;
        false ->
            _ = cnode_registry_nif:remove_node(Name, atom_to_binary(CNode, utf8), 0),
            _ = file:delete(Path),
            ok
    end;
purge(#st{}) ->
    ok.

feed_head(#st{mode = shared, name = Name}) ->
    cnode_registry_nif:feed_head(Name);
feed_head(#st{mode = remote, cnode = CNode}) ->
    case call_worker(CNode, feed_head, ?CALL_TIMEOUT) of
        N when is_integer(N) -> N;
        _ -> 0
    end.

poll(St = #st{pos = Pos}) ->
    %% On a segment another process scribbled on, feed_poll raises
    %% error({cnode_registry, corrupt}): those events are lost to the
    %% listeners, the attachment goes on.
    case try feed_poll(St, Pos) catch _:_ -> failed end of
        {Events, Next, _Missed} when is_list(Events), is_integer(Next) ->
            Me = node(),
            [dispatch(St, E) || E <- Events, node(element(3, E)) =/= Me],
            St#st{pos = Next};
        _ ->
            St
    end.

feed_poll(#st{mode = shared, name = Name}, Pos) ->
    cnode_registry_nif:feed_poll(Name, Pos, ?FEED_MAX);
feed_poll(#st{mode = remote, cnode = CNode}, Pos) ->
    call_worker(CNode, {feed_poll, Pos, ?FEED_MAX}, ?CALL_TIMEOUT).

dispatch(#st{name = Name, listeners = Ls}, {register, Key, Pid, Value}) ->
    send_all(Ls, {register, Name, Key, Pid, Value});
dispatch(#st{name = Name, listeners = Ls}, {unregister, Key, Pid}) ->
    send_all(Ls, {unregister, Name, Key, Pid});
dispatch(_St, _Update) ->
    ok.

%% gen_server:call to the C node's registry worker, {error, Why} when the call
%% exits (no worker, no connection, timeout). (Not `catch Expr': OTP 29
%% deprecates it, and warnings are errors here.)
call_worker(CNode, Req, Timeout) ->
    try gen_server:call({?WORKER, CNode}, Req, Timeout)
    catch exit:Why -> {error, Why}
    end.
