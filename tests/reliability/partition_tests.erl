%% @doc Partitions (issue 12): three Erlang nodes and the cnode in network
%% namespaces (rel_net); the network is cut in three patterns (one node off,
%% the C node's anchor off, a 2/2 split) while the same :global names are held by
%% C workers on one side and taken by Erlang processes on the other, then
%% healed. Afterwards every node must agree on every name, each name's owner
%% must be the one its resolver picks (as :global does for Erlang processes),
%% the loser killed or told, and no name or shared-registry entry may belong to
%% a dead process. With a visible C node (--visible: it speaks global's and
%% pg's protocols and resolves its own clashes when it sorts lower), also:
%% global:sync() completes on every node after the heal, the C node's own name
%% table agrees with every node's, and pg's members of cache_workers agree on
%% every node and in the C node. Run by `make test-reliability' (scripts/run-tests
%% reliability).
-module(partition_tests).
-include_lib("eunit/include/eunit.hrl").

-export([run/3, rounds/0]).

%% The C-side names and their resolvers: how the name was registered (from C,
%% or from BEAM with global:register_name/2,3) and what :global then does.
-define(CASES, [{c_exit, exit}, {c_notify, notify}, {beam_default, exit},
                {beam_exit, exit}, {beam_notify, notify}, {beam_notify_all, notify_all},
                {beam_user_fun, user}]).

partition_test_() ->
    case rel_net:can() of
        {skip, Why} ->
            rel_checks:note("partitions SKIPPED: cannot make network namespaces here: ~s", [Why]),
            [];
        ok ->
            {setup, fun rel_net:up/0, fun rel_net:down/1,
             fun(Net) ->
                     [{lists:flatten(io_lib:format("~s, C node ~s, round ~b", [P, Cn, R])),
                       {timeout, 240, fun() -> run(Net, P, Cn) end}}
                      || {Cn, P} <- scenarios(), R <- lists:seq(1, rounds())]
             end}
    end.

full() -> os:getenv("RELIABILITY") =:= "full".

%% RELIABILITY_PATTERNS=one_off,split runs only those.
patterns() ->
    case os:getenv("RELIABILITY_PATTERNS") of
        false -> [one_off, anchor_off, split];
        Ps -> [list_to_existing_atom(P) || P <- string:lexemes(Ps, ",")]
    end.

%% The C node sorts below the Erlang nodes (c1 < n*) in the reduced run; the
%% full run also has it sort above (z1), and runs the baseline: the same with
%% Erlang processes on side A's first node holding the names instead of C
%% workers (the C node still serves the registry), which shows that what the
%% checks expect is what :global does.
cnames() -> case full() of true -> ["c1", "z1", "baseline"]; false -> ["c1"] end.

%% {Cname, Pattern}: every pattern with each hidden cname, and a visible C
%% node ("visible c1": sorts below; "visible z1": above): one_off in the
%% reduced run, every pattern and both orders with RELIABILITY=full.
scenarios() ->
    Vis = case full() of
              true -> [{"visible " ++ C, P} || C <- ["c1", "z1"], P <- patterns()];
              false -> [{"visible c1", P} || P <- patterns(), P =:= one_off]
          end,
    [{Cn, P} || Cn <- cnames(), P <- patterns()] ++ Vis.

%% @doc How many times each scenario runs: 1, 3 with RELIABILITY=full, or
%% RELIABILITY_ROUNDS.
-spec rounds() -> pos_integer().
rounds() ->
    case os:getenv("RELIABILITY_ROUNDS") of
        false -> case full() of true -> 3; false -> 1 end;
        N -> list_to_integer(N)
    end.

%% Pattern -> {side A (with the C node, namespace 4), side B, cut, heal}.
pattern(one_off) ->
    {[1, 2], [3], fun(Net) -> rel_net:cut(Net, 3) end, fun(Net) -> rel_net:heal(Net, 3) end};
pattern(anchor_off) ->
    {[2, 3], [1], fun(Net) -> rel_net:cut(Net, 1) end, fun(Net) -> rel_net:heal(Net, 1) end};
pattern(split) ->
    Pairs = [{I, J} || I <- [1, 4], J <- [2, 3]] ++ [{J, I} || I <- [1, 4], J <- [2, 3]],
    {[1], [2, 3],
     fun(Net) -> [rel_net:block(Net, I, J) || {I, J} <- Pairs] end,
     fun(Net) -> [rel_net:unblock(Net, I, J) || {I, J} <- Pairs] end}.

%% @doc One pattern on a fresh cluster; fails listing every check that failed.
-spec run(rel_net:net(), atom(), string()) -> ok.
run(Net, Pattern, "visible " ++ Cname) ->
    run(Net, Pattern, Cname, true);
run(Net, Pattern, Cname) ->
    run(Net, Pattern, Cname, false).

run(Net, Pattern, Cname, Visible) ->
    Cl = (rel_net:cluster(Net, #{cname => Cname, visible => Visible}))#{
             baseline => Cname =:= "baseline", visible => Visible},
    try run_(Cl, Pattern)
    after
        rel_net:stop_cluster(Cl),
        rel_net:reset(Net) % a failed run may have left the network cut
    end.

run_(Cl = #{net := Net, c_node := CN}, Pattern) ->
    {SideA, SideB, Cut, Heal} = pattern(Pattern),
    A1 = rel_net:peer(Cl, hd(SideA)),
    B1 = rel_net:peer(Cl, hd(SideB)),
    Call = fun(P, Dest, Req) -> cnb_cluster:call(P, gen_server, call, [Dest, Req, 20000]) end,
    %% The subscriber of the probes' info messages, on side A.
    S = cnb_cluster:call(A1, rel_checks, holder, []),
    Ws = [{Case, Kind, case Cl of
                           #{baseline := true} -> make_erl_w(Case, A1);
                           _ -> make_w(Case, A1, CN, S, Call)
                       end} || {Case, Kind} <- ?CASES],
    Names = [name(Case) || {Case, _, _} <- Ws],
    {ok, View0} = rel_checks:agree(rel_net:peers(Cl), 10000),
    [?assertEqual(W, proplists:get_value(name(Case), View0)) || {Case, _, W} <- Ws],
    %% Side B maps the C node's registry; 10 of its processes hold entries.
    {ok, Keeper} = cnb_cluster:call(B1, rel_checks, attach, [CN]),
    Hs = cnb_cluster:call(B1, rel_checks, reg_holders, [part, 10]),
    ?assertEqual(10, length([K || {K = {part, _, _}, _, _} <- rel_checks:reg_entries(A1, CN)])),

    %% Cut; wait until each side has lost the other (net_ticktime).
    T0 = erlang:monotonic_time(millisecond),
    Cut(Net),
    NodesA = [rel_net:node_of(Cl, I) || I <- SideA] ++ [CN],
    NodesB = [rel_net:node_of(Cl, I) || I <- SideB],
    Apart = fun() ->
                    lists:all(fun(I) -> not_connected(rel_net:peer(Cl, I), NodesA) end, SideB) andalso
                        lists:all(fun(I) -> not_connected(rel_net:peer(Cl, I), NodesB) end, SideA)
            end,
    ?assert(cnb_cluster:wait_until(Apart, 30000)),
    Detect = erlang:monotonic_time(millisecond) - T0,
    GoneB = cnb_cluster:call(B1, rel_checks, wait_view,
                             [fun(V) -> [N || {N, _} <- V, lists:member(N, Names)] =:= [] end,
                              10000, os:system_time(millisecond)], 20000),
    ?assert(is_integer(GoneB)),
    %% Half of side B's registry owners end while the C node cannot see it.
    [cnb_cluster:call(B1, erlang, exit, [H, kill]) || H <- lists:sublist(Hs, 5)],
    %% Side B takes every name for an Erlang process of its own, with the same
    %% resolver the C side's holder has.
    Es = [{Case, begin
                     {E, yes} = cnb_cluster:call(B1, rel_checks, register_as,
                                                 [name(Case) | resolver_arg(Case)]),
                     E
                 end} || {Case, _} <- ?CASES],
    ?assertEqual([W || {_, _, W} <- Ws],
                 [proplists:get_value(name(C), cnb_cluster:call(A1, rel_checks, view, []))
                  || {C, _, _} <- Ws]),

    %% Heal, reconnect, let global settle.
    Heal(Net),
    T1 = erlang:monotonic_time(millisecond),
    Reconnect = fun() ->
                        [pong = cnb_cluster:call(B1, net_adm, ping, [N]) || N <- NodesA -- [CN]],
                        true
                end,
    ?assert(cnb_cluster:wait_until(Reconnect, 20000)),
    [ok = cnb_cluster:call(P, global, sync, [], 60000) || P <- rel_net:peers(Cl)],
    Expected = [{Case, expect(Kind, name(Case), W, proplists:get_value(Case, Es))}
                || {Case, Kind, W} <- Ws],
    Settled = fun() -> owners_as_expected(rel_net:peers(Cl), Expected) end,
    HealMs = case cnb_cluster:wait_until(Settled, 15000) of
                 true -> erlang:monotonic_time(millisecond) - T1;
                 false -> not_within_15000
             end,
    Agree = rel_checks:agree(rel_net:peers(Cl), 5000),
    Fails = check_all(Cl, A1, B1, S, Expected, Agree) ++ attachment_told(B1, Keeper, CN)
        ++ visible_checks(Cl, A1, Agree),
    PartLeft = length([K || {K = {part, _, _}, _, _} <- rel_checks:reg_entries(A1, CN)]),
    rel_checks:note("partition ~p (C node ~s): cut detected after ~b ms, names gone on side B "
                    "after ~p ms more, owners as expected ~p ms after heal; ~b of side B's 10 registry "
                    "entries (5 owners alive) left; ~b failed check(s)",
                    [Pattern, CN, Detect, GoneB, HealMs, PartLeft, length(Fails)]),
    [rel_checks:note("  FAIL ~w", [F]) || F <- Fails],
    ?assertEqual([], Fails),
    ok.

%% A visible C node: its own name table has every name as the nodes do, and
%% pg's members of cache_workers (the demo's cache workers join it) are the
%% same on every node and in the C node.
visible_checks(#{visible := false}, _A1, _Agree) ->
    [];
visible_checks(Cl = #{c_node := CN}, A1, Agree) ->
    View = case Agree of {ok, V} -> V; {disagree, [V | _]} -> V end,
    CTable = [{N, P} || {N, _} <- View,
                        P <- [cnb_cluster:call(A1, gen_server, call,
                                               [{probe, CN}, {global_whereis, N}, 20000], 30000)]],
    Members = fun() -> [lists:sort(cnb_cluster:call(P, pg, get_members, [cache_workers]))
                        || P <- rel_net:peers(Cl)]
                           ++ [lists:sort(cnb_cluster:call(A1, gen_server, call,
                                                           [{probe, CN}, {pg_members, cache_workers}]))]
              end,
    PgAgree = cnb_cluster:wait_until(fun() -> length(lists:usort(Members())) =:= 1 end, 10000),
    [{all, c_name_table, View, CTable} || CTable =/= View] ++
        [{all, pg_members_agree, same, Members()} || not PgAgree].

%% Side B's attachment to the C node's registry ended when the connection
%% did ({shutdown, {cnode_down, CN}}), as cnode_registry:attach/3 promises.
attachment_told(B1, Keeper, CN) ->
    Got = rel_checks:holder_msgs_on(B1, Keeper),
    case [R || {'EXIT', _, R} <- Got] of
        [{shutdown, {cnode_down, CN}} | _] -> [];
        Other -> [{all, attachment_ended, {shutdown, {cnode_down, CN}}, Other}]
    end.

not_connected(P, Nodes) ->
    Conn = cnb_cluster:call(P, erlang, nodes, [connected]),
    [N || N <- Nodes, lists:member(N, Conn)] =:= [].

name(c_exit) -> {cache, c_exit};
name(Case) -> Case.

%% The C-side holder of Case's name: a C worker registered from C (cache_sup
%% or a probe), or a probe registered from BEAM.
make_w(c_exit, A1, CN, _S, Call) ->
    {ok, W} = Call(A1, {cache_sup, CN}, {start, c_exit, content}),
    W;
make_w(Case, A1, CN, S, Call) ->
    {ok, W} = Call(A1, {probe, CN}, spawn),
    ok = Call(A1, W, {subscribe, S}),
    yes = case Case of
              c_notify -> Call(A1, W, {global_register, c_notify, random_notify});
              beam_default -> cnb_cluster:call(A1, global, register_name, [Case, W]);
              _ -> cnb_cluster:call(A1, global, register_name, [Case, W, resolver(Case)])
          end,
    W.

%% The baseline's holder of Case's name: an Erlang process on side A.
make_erl_w(Case, A1) ->
    {W, yes} = cnb_cluster:call(A1, rel_checks, register_as, [name(Case) | resolver_arg(Case)]),
    W.

resolver(c_exit) -> fun global:random_exit_name/3;
resolver(c_notify) -> fun global:random_notify_name/3;
resolver(beam_exit) -> fun global:random_exit_name/3;
resolver(beam_notify) -> fun global:random_notify_name/3;
resolver(beam_notify_all) -> fun global:notify_all_name/3;
resolver(beam_user_fun) -> fun rel_checks:keep_higher/3.

resolver_arg(beam_default) -> [];
resolver_arg(Case) -> [resolver(Case)].

minmax(P1, P2) -> case node(P1) < node(P2) of true -> {P1, P2}; false -> {P2, P1} end.

%% What :global promises for a conflict between W (C side) and E (side B).
expect(exit, _Name, W, E) ->
    {Min, Max} = minmax(W, E),
    #{w => W, e => E, owner => Min, dead => [Max], alive => [Min], told => []};
expect(notify, Name, W, E) ->
    {Min, Max} = minmax(W, E),
    #{w => W, e => E, owner => Min, dead => [], alive => [Min, Max],
      told => [{Max, {global_name_conflict, Name}}]};
expect(notify_all, Name, W, E) ->
    #{w => W, e => E, owner => undefined, dead => [], alive => [W, E],
      told => [{W, {global_name_conflict, Name, E}}, {E, {global_name_conflict, Name, W}}]};
expect(user, _Name, W, E) ->
    {Lo, Hi} = minmax(W, E),
    #{w => W, e => E, owner => Hi, dead => [Lo], alive => [Hi], told => []}.

owners_as_expected(Peers, Expected) ->
    Vs = rel_checks:views(Peers),
    lists:all(fun(V) ->
                      is_list(V) andalso
                          lists:all(fun({Case, #{owner := O}}) ->
                                            proplists:get_value(name(Case), V, undefined) =:= O
                                    end, Expected)
              end, Vs).

%% Every check; returns the failed ones as {Case, Check, Expected, Got}.
check_all(#{c_node := CN}, A1, B1, S, Expected, Agree) ->
    AgreeFail = case Agree of
                    {ok, _} -> [];
                    {disagree, Vs} -> [{all, nodes_agree, same_view, Vs}]
                end,
    View = case Agree of {ok, V} -> V; {disagree, [V | _]} -> V end,
    AllPids = lists:append([[W, E] || {_, #{w := W, e := E}} <- Expected]),
    Dead = cnb_cluster:call(A1, rel_checks, dead, [AllPids, 1000]),
    Told = fun(Pid, Msg) -> told(A1, B1, S, Pid, Msg) end,
    PerCase =
        lists:append(
          [[{Case, owner, O, proplists:get_value(name(Case), View, undefined)}
            || proplists:get_value(name(Case), View, undefined) =/= O] ++
               [{Case, loser_killed, P, alive} || P <- Ds, not maps:is_key(P, Dead)] ++
               [{Case, alive, P, maps:get(P, Dead)} || P <- As, maps:is_key(P, Dead)] ++
               [{Case, told, {P, M}, not_received} || {P, M} <- Ts, not Told(P, M)]
           || {Case, #{owner := O, dead := Ds, alive := As, told := Ts}} <- Expected]),
    Stale = rel_checks:stale_names(A1, View),
    StaleE = rel_checks:stale_entries(A1, CN),
    AgreeFail ++ PerCase ++
        [{all, stale_names, [], Stale} || Stale =/= []] ++
        [{all, stale_registry_entries, [], StaleE} || StaleE =/= []].

%% Whether Pid got Msg: a probe (C) reports it to the subscriber S (on A1)
%% as {probe_info, Pid, Msg}; an Erlang holder on B1 or A1 keeps it. Waits up
%% to 3 s.
told(A1, B1, S, Pid, Msg) ->
    NodeA = cnb_cluster:call(A1, erlang, node, []),
    NodeB = cnb_cluster:call(B1, erlang, node, []),
    cnb_cluster:wait_until(
      fun() ->
              case node(Pid) of
                  NodeB -> lists:member(Msg, msgs(B1, Pid));
                  NodeA -> lists:member(Msg, msgs(A1, Pid));
                  _ -> lists:member({probe_info, Pid, Msg}, msgs(A1, S))
              end
      end, 3000).

msgs(P, H) -> rel_checks:holder_msgs_on(P, H).
