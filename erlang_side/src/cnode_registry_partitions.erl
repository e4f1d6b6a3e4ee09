%% @doc What the partitions of a standalone cnode_registry decide, as in
%% Elixir's Registry: which partition process owns a caller's registrations
%% (chosen by the caller's pid; `register' returns it and links the caller to
%% it, and the caller's last unregister unlinks), and how `dispatch' splits a
%% key's entries (by partition of their pid in a duplicate registry, one call
%% per partition, in parallel processes with `parallel: true').
%%
%% The entries all live in one NIF table; the partitions are processes. They
%% are found in an ETS table named after the registry (as Registry names its
%% own), owned by partition 0: `{?PARTS, Count, Kind}' and `{I, Pid}' per
%% partition. An attached registry has none: no link, no split.
%%
%% How many registrations the caller holds per partition process is kept in
%% the caller's process dictionary (`{cnode_registry_partitions, Owner}'):
%% only the caller changes its own entries of a standalone registry (and its
%% death ends them all), so the count is exact without asking the table for
%% every key of the caller on each unregister. Tests:
%% tests/integration/exunit/registry_dropin_test.exs.
-module(cnode_registry_partitions).

-export([publish/4, unpublish/1, owner/1, registered/1, unregistered/2, dispatch/5]).

-define(PARTS, '$cnode_registry_partitions').

%% @doc Called by partition I of registry Reg in its init: partition 0
%% creates the table (it dies with partition 0, as the registry does).
-spec publish(atom(), non_neg_integer(), pos_integer(), unique | duplicate) -> ok.
publish(Reg, 0, Count, Kind) ->
    Reg = new_table(Reg, 1),
    true = ets:insert(Reg, [{?PARTS, Count, Kind}, {0, self()}]),
    ok;
publish(Reg, I, _Count, _Kind) ->
    true = ets:insert(Reg, {I, self()}),
    ok.

%% The table of a partition 0 that was just killed may be there for a moment
%% (until its exit is processed); one another process holds stays (badarg).
new_table(Reg, Try) ->
    try ets:new(Reg, [named_table, public, set, {read_concurrency, true}])
    catch error:badarg when Try < 100 ->
            timer:sleep(1),
            new_table(Reg, Try + 1)
    end.

%% @doc Called by partition 0 when it stops, before the registry's name goes:
%% the table goes first, so that a registry started again under the name as
%% soon as the name is free finds no table in its way.
-spec unpublish(atom()) -> ok.
unpublish(Reg) ->
    try ets:delete(Reg) of
        true -> ok
    catch error:badarg -> ok
    end.

%% @doc The partition process of registry Reg that owns the caller's
%% registrations, or `none' (an attached registry, or one starting).
-spec owner(atom()) -> pid() | none.
owner(Reg) ->
    case parts(Reg) of
        {Count, _} ->
            try ets:lookup_element(Reg, erlang:phash2(self(), Count), 2)
            catch error:badarg -> none
            end;
        none -> none
    end.

%% @doc After the caller registered once more in Reg: links it to its
%% partition and returns that (or `none').
-spec registered(atom()) -> pid() | none.
registered(Reg) ->
    case owner(Reg) of
        none -> none;
        Owner ->
            link(Owner),
            _ = put({?MODULE, Owner}, held(Owner) + 1),
            Owner
    end.

%% @doc After the caller removed N of its entries from Reg (Owner is what
%% owner/1 said before): unlinks it from its partition if none is left.
-spec unregistered(pid() | none, non_neg_integer()) -> ok.
unregistered(none, _N) ->
    ok;
unregistered(Owner, N) ->
    case held(Owner) - N of
        Left when Left > 0 ->
            _ = put({?MODULE, Owner}, Left),
            ok;
        _ ->
            _ = erase({?MODULE, Owner}),
            true = unlink(Owner),
            ok
    end.

held(Owner) ->
    case get({?MODULE, Owner}) of
        undefined -> 0;
        N -> N
    end.

%% @doc Calls Fun (of one argument) with Entries, the entries of Key in Reg,
%% unless there are none: once, or in a duplicate registry of several
%% partitions once per partition that has entries (highest partition first, as
%% Registry), in a process of its own each when Opts say `parallel' (truthy,
%% as Elixir reads it; Opts must then be a list, as there, even with no
%% entries). A parallel call that fails makes dispatch exit with
%% `{Reason, {cnode_registry, dispatch, [Reg, Key]}}' (the processes are
%% linked to the caller, as Registry's tasks are).
-spec dispatch(atom(), term(), [{pid(), term()}], fun(([{pid(), term()}]) -> term()),
               term()) -> ok.
dispatch(Reg, Key, Entries, Fun, Opts) ->
    case parts(Reg) of
        {Count, duplicate} when Count > 1 ->
            Groups = split(Entries, Count),
            case parallel(Opts) of
                true -> run_parallel(Fun, Groups, [Reg, Key]);
                false -> lists:foreach(Fun, Groups)
            end;
        _ when Entries =:= [] ->
            ok;
        _ ->
            _ = Fun(Entries),
            ok
    end.

%% {Count, Kind} of a standalone registry; `none' without a table (asked
%% first: an attached registry costs no exception).
parts(Reg) ->
    try ets:whereis(Reg) =/= undefined andalso ets:lookup(Reg, ?PARTS) of
        [{_, Count, Kind}] -> {Count, Kind};
        _ -> none
    catch error:badarg -> none
    end.

parallel(Opts) when is_list(Opts) ->
    case lists:keyfind(parallel, 1, Opts) of
        {parallel, V} -> V =/= false andalso V =/= nil;
        false -> false
    end.

%% Entries grouped by the partition of their pid, each group in the order
%% given, highest partition first.
split(Entries, Count) ->
    ByPart = lists:foldl(fun({Pid, _} = E, M) ->
                                 P = erlang:phash2(Pid, Count),
                                 M#{P => [E | maps:get(P, M, [])]}
                         end, #{}, Entries),
    [lists:reverse(G) || {_, G} <- lists:reverse(lists:keysort(1, maps:to_list(ByPart)))].

%% Each group in a linked process that unlinks once done (so a caller that
%% traps exits gets no 'EXIT' of a run that went well).
run_parallel(Fun, Groups, Args) ->
    Me = self(),
    Runs = [spawn_opt(fun() -> _ = Fun(G), unlink(Me) end, [link, monitor]) || G <- Groups],
    lists:foreach(fun({Pid, Ref}) ->
                          receive
                              {'DOWN', Ref, process, Pid, normal} -> ok;
                              {'DOWN', Ref, process, Pid, Reason} ->
                                  exit({Reason, {cnode_registry, dispatch, Args}})
                          end
                  end, Runs).
