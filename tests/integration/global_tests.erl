%% Integration tests of :global names for C workers (issue 5): three Erlang
%% nodes a, b, c (one visible cluster) and the cnode program connected to a
%% only. Names must be the C pid itself on every node, and gone on every node
%% the moment the worker (or the whole C node) is gone.
-module(global_tests).
-include_lib("eunit/include/eunit.hrl").

-export([cluster/1, cluster/2, wait_gone/3, wait_all_gone/3, start_range/3, stop_all/1, partition_register/1,
         partition/2]).

-define(T(Name, Secs), {atom_to_list(Name), {timeout, Secs, fun() -> with_cluster(fun Name/2) end}}).

global_test_() ->
    [?T(visible_on_every_node, 90),
     ?T(worker_stop_gone_everywhere, 90),
     ?T(kill9_c_node_gone_everywhere, 90),
     ?T(anchor_killed_b_serves, 90),
     ?T(thousand_workers, 300),
     ?T(conflict_after_partition, 120),
     ?T(notify_resolver_reaches_c, 120)].

with_cluster(F) ->
    C = cnb_cluster:new(),
    try F(C, cluster(C))
    after cnb_cluster:stop(C)
    end.

%% a, b, c fully connected (visible), then the C node connected to a only.
cluster(C) -> cluster(C, "g").

%% The same, with the C node's name made from Prefix (which decides how it
%% sorts against a_..., b_..., c_...).
cluster(C, Prefix) ->
    Args = ["-kernel", "prevent_overlapping_partitions", "false", "-connect_all", "true"],
    Ns = [begin
              {ok, P, N} = cnb_cluster:start_node(C, #{name => Nm, args => Args}),
              {P, N}
          end || Nm <- ["a", "b", "c"]],
    [{A, NA}, {_, NB}, {_, NC}] = Ns,
    pong = cnb_cluster:call(A, net_adm, ping, [NB]),
    pong = cnb_cluster:call(A, net_adm, ping, [NC]),
    [ok = cnb_cluster:call(P, global, sync, []) || {P, _} <- Ns],
    {ok, Port, CN} = cnb_cluster:start_cnode(
                       C, ["--cookie", cnb_cluster:cookie(C), "--sname",
                           cnb_cluster:unique_name(Prefix), "--demo", "--connect", atom_to_list(NA)]),
    true = cnb_cluster:wait_until(
             fun() -> lists:member(CN, cnb_cluster:call(A, erlang, nodes, [hidden])) end, 5000),
    #{nodes => Ns, port => Port, cnode => CN}.

peers(#{nodes := Ns}) -> [P || {P, _} <- Ns].

whereis_all(Cl, Name) ->
    [cnb_cluster:call(P, global, whereis_name, [Name]) || P <- peers(Cl)].

start_cache(P, CN, Id) ->
    cnb_cluster:call(P, gen_server, call, [{cache_sup, CN}, {start, Id, {content, Id}}, 30000]).

%% On a peer: polls whereis every 2 ms until undefined; returns the ms since
%% T0 (OS time, which all the VMs on this host share).
wait_gone(Name, T0, Limit) ->
    case global:whereis_name(Name) of
        undefined -> os:system_time(millisecond) - T0;
        _ ->
            case os:system_time(millisecond) - T0 > Limit of
                true -> timeout;
                false -> timer:sleep(2), wait_gone(Name, T0, Limit)
            end
    end.

%% On a peer: polls until no {cache, _} name is left.
wait_all_gone(Prefix, T0, Limit) ->
    Left = [N || N <- global:registered_names(), element(1, N) =:= Prefix],
    case Left of
        [] -> os:system_time(millisecond) - T0;
        _ ->
            case os:system_time(millisecond) - T0 > Limit of
                true -> {timeout, length(Left)};
                false -> timer:sleep(5), wait_all_gone(Prefix, T0, Limit)
            end
    end.

%% Measures, from the test runner, how long each node takes to drop Name after
%% Kill() ran. Peers poll in parallel; times are per node, in ms.
gone_times(Cl, Name, Kill) ->
    Self = self(),
    Kill(),
    T0 = os:system_time(millisecond),
    Ps = peers(Cl),
    [spawn_link(fun() ->
                        Self ! {gone, P, cnb_cluster:call(P, ?MODULE, wait_gone, [Name, T0, 10000])}
                end) || P <- Ps],
    [receive {gone, P, Ms} -> Ms after 20000 -> timeout end || P <- Ps].

start_range(CN, From, To) ->
    [begin {ok, W} = gen_server:call({cache_sup, CN}, {start, I, I}, 30000), W end
     || I <- lists:seq(From, To)].

stop_all(Ws) ->
    [ok = gen_server:call(W, stop) || W <- Ws],
    ok.

%%% --------------------------------------------------------------- tests

visible_on_every_node(_C, Cl = #{nodes := [{A, _}, {B, _}, {Cc, _}], cnode := CN}) ->
    {ok, W} = start_cache(B, CN, 1),
    ?assertEqual(CN, node(W)),
    ?assertEqual([W, W, W], whereis_all(Cl, {cache, 1})),
    [?assert(lists:member({cache, 1}, cnb_cluster:call(P, global, registered_names, [])))
     || P <- [A, B, Cc]],
    %% :global.send and GenServer.call({:global, Name}, ...) from b and c.
    ?assertEqual({ok, {content, 1}},
                 cnb_cluster:call(B, gen_server, call, [{global, {cache, 1}}, get])),
    ?assertEqual({ok, {content, 1}},
                 cnb_cluster:call(Cc, gen_server, call, [{global, {cache, 1}}, get])),
    ?assertEqual(W, cnb_cluster:call(Cc, global, send, [{cache, 1}, hello])),
    %% Every node monitors the C pid, so b and c are connected to the C node.
    [?assert(lists:member(CN, cnb_cluster:call(P, erlang, nodes, [hidden]))) || P <- [B, Cc]],
    %% A second worker for the same id is refused with the live pid.
    ?assertEqual({error, {already_started, W}}, start_cache(Cc, CN, 1)),
    %% The C side sees it too.
    ?assertEqual(W, cnb_cluster:call(A, gen_server, call, [{probe, CN}, {global_whereis, {cache, 1}}])),
    ?assert(lists:member({cache, 1},
                         cnb_cluster:call(A, gen_server, call, [{probe, CN}, global_names]))).

worker_stop_gone_everywhere(_C, Cl = #{nodes := [{A, _} | _], cnode := CN}) ->
    {ok, W1} = start_cache(A, CN, 1),
    T1 = gone_times(Cl, {cache, 1}, fun() -> ok = cnb_cluster:call(A, gen_server, call, [W1, stop]) end),
    {ok, W2} = start_cache(A, CN, 2),
    T2 = gone_times(Cl, {cache, 2}, fun() -> cnb_cluster:call(A, erlang, exit, [W2, kill]) end),
    {ok, W3} = start_cache(A, CN, 3),
    T3 = gone_times(Cl, {cache, 3},
                    fun() -> catch cnb_cluster:call(A, gen_server, call, [W3, crash]) end),
    ?debugFmt("name gone on a, b, c after stop ~p ms, kill ~p ms, crash ~p ms", [T1, T2, T3]),
    [?assert(is_integer(T)) || T <- T1 ++ T2 ++ T3].

kill9_c_node_gone_everywhere(C, Cl = #{nodes := [{A, _} | _], cnode := CN, port := Port}) ->
    _ = [{ok, _} = start_cache(A, CN, I) || I <- lists:seq(1, 5)],
    ?assertEqual(5, length([N || N <- cnb_cluster:call(A, global, registered_names, []),
                                 element(1, N) =:= cache])),
    Self = self(),
    Ps = peers(Cl),
    OsPid = cnb_cluster:cnode_os_pid(C, Port),
    T0 = os:system_time(millisecond),
    _ = os:cmd("kill -9 " ++ integer_to_list(OsPid)),
    [spawn_link(fun() ->
                        Self ! {gone, P, cnb_cluster:call(P, ?MODULE, wait_all_gone,
                                                          [cache, T0, 10000])}
                end) || P <- Ps],
    R = [receive {gone, P, Ms} -> Ms after 20000 -> timeout end || P <- Ps],
    ?debugFmt("kill -9 of the C node: all its names gone on a, b, c after ~p ms", [R]),
    [?assert(is_integer(T)) || T <- R].

anchor_killed_b_serves(C, Cl = #{nodes := [{A, _}, {B, _}, {Cc, _}], cnode := CN}) ->
    {ok, W} = start_cache(B, CN, 1),
    OsA = list_to_integer(cnb_cluster:call(A, os, getpid, [])),
    _ = os:cmd("kill -9 " ++ integer_to_list(OsA)),
    true = cnb_cluster:wait_until(fun() -> not cnb_cluster:os_pid_alive(OsA) end, 5000),
    ?assert(cnb_cluster:wait_until(
              fun() -> not lists:member(A, cnb_cluster:call(B, erlang, nodes, [])) end, 5000)
            orelse true),
    timer:sleep(200),
    ?assertEqual([W, W], [cnb_cluster:call(P, global, whereis_name, [{cache, 1}]) || P <- [B, Cc]]),
    %% New registrations go through b (or c): the anchor is gone.
    {ok, W2} = start_cache(B, CN, 2),
    ?assertEqual([W2, W2], [cnb_cluster:call(P, global, whereis_name, [{cache, 2}]) || P <- [B, Cc]]),
    _ = C,
    _ = Cl.

thousand_workers(_C, Cl = #{nodes := [{A, _} | _], cnode := CN}) ->
    T0 = erlang:monotonic_time(millisecond),
    Ws = cnb_cluster:call(A, ?MODULE, start_range, [CN, 1, 1000], 290000),
    T1 = erlang:monotonic_time(millisecond),
    [?assertEqual(1000, length([N || N <- cnb_cluster:call(P, global, registered_names, []),
                                     element(1, N) =:= cache])) || P <- peers(Cl)],
    ok = cnb_cluster:call(A, ?MODULE, stop_all, [Ws], 120000),
    T2 = os:system_time(millisecond),
    Left = [cnb_cluster:call(P, ?MODULE, wait_all_gone, [cache, T2, 30000]) || P <- peers(Cl)],
    ?debugFmt("1000 C workers registered in ~b ms; after stopping them, left: ~p",
              [T1 - T0, Left]),
    [?assert(is_integer(L)) || L <- Left].

%% Cuts Cc off from Nodes. c's connection to the C node comes from its
%% global_name_server monitoring the C worker, and may still be on its way.
partition(Cc, Nodes) ->
    [true = cnb_cluster:wait_until(
              fun() -> lists:member(N, cnb_cluster:call(Cc, erlang, nodes, [connected])) end,
              5000) || N <- Nodes],
    [true = cnb_cluster:call(Cc, erlang, disconnect_node, [N]) || N <- Nodes],
    ok.

%% On c: register Name for a fresh Erlang process; returns {Pid, yes|no}.
partition_register(Name) ->
    Self = self(),
    P = spawn(fun() ->
                      R = global:register_name(Name, self()),
                      Self ! {reg, self(), R},
                      receive stop -> ok end
              end),
    receive {reg, P, R} -> {P, R} after 10000 -> {P, timeout} end.

%% During a partition (c cut off from a, b and the C node) an Erlang process on
%% c takes the name the C worker holds; on heal exactly one owner remains on
%% every node, and the loser was killed (random_exit_name).
conflict_after_partition(C, Cl) ->
    conflict(C, Cl, fun(A, CN) -> {ok, W} = start_cache(A, CN, 99), {W, {cache, 99}} end,
             killed).

%% The same with random_notify_name: the C worker that loses is told with
%% {global_name_conflict, Name}, and the C API hands it to the worker.
notify_resolver_reaches_c(C, Cl) ->
    conflict(C, Cl,
             fun(A, CN) ->
                     {ok, P} = cnb_cluster:call(A, gen_server, call, [{probe, CN}, spawn]),
                     H = cnb_cluster:call(A, runtime_tests, trap, []),
                     ok = cnb_cluster:call(A, gen_server, call, [P, {subscribe, H}]),
                     put(probe_sub, {A, H}),
                     yes = cnb_cluster:call(A, gen_server, call,
                                            [P, {global_register, probe_name, random_notify}]),
                     {P, probe_name}
             end, notify).

conflict(_C, Cl = #{nodes := [{A, NA}, {B, NB}, {Cc, _}], cnode := CN}, Make, Expect) ->
    {W, Name} = Make(A, CN),
    ?assertEqual([W, W, W], whereis_all(Cl, Name)),
    partition(Cc, [NA, NB, CN]),
    true = cnb_cluster:wait_until(
             fun() -> cnb_cluster:call(Cc, global, whereis_name, [Name]) =:= undefined end, 5000),
    {E, yes} = cnb_cluster:call(Cc, ?MODULE, partition_register, [Name]),
    ?assertEqual([W, W], [cnb_cluster:call(P, global, whereis_name, [Name]) || P <- [A, B]]),
    %% Heal.
    pong = cnb_cluster:call(Cc, net_adm, ping, [NA]),
    pong = cnb_cluster:call(Cc, net_adm, ping, [NB]),
    [ok = cnb_cluster:call(P, global, sync, []) || P <- peers(Cl)],
    timer:sleep(500),
    Owners = lists:usort(whereis_all(Cl, Name)),
    ?debugFmt("after heal the owner of ~p is ~p (C worker ~p, Erlang ~p)", [Name, Owners, W, E]),
    ?assertMatch([_], Owners),
    [Owner] = Owners,
    Loser = case Owner of W -> E; E -> W end,
    case Expect of
        killed when Loser =:= W ->
            %% random_exit_name killed the C worker that lost (the kill may
            %% still be on its way).
            ?assert(cnb_cluster:wait_until(
                      fun() -> case catch cnb_cluster:call(A, gen_server, call, [W, get, 1000]) of
                                   {'EXIT', {noproc, _}} -> true;
                                   _ -> false
                               end
                      end, 5000));
        killed ->
            ?assert(cnb_cluster:wait_until(
                      fun() -> not cnb_cluster:call(Cc, erlang, is_process_alive, [E]) end, 5000));
        notify when Loser =:= W ->
            {Ap, H} = get(probe_sub),
            ?assertEqual({probe_info, W, {global_name_conflict, Name}},
                         cnb_cluster:call(Ap, runtime_tests, run_in,
                                          [H, fun() -> runtime_tests:collect(5000) end]));
        notify ->
            %% The Erlang process lost; it was told the same way.
            ok
    end.
