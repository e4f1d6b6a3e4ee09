%% Integration tests of visible mode across partitions and heals (issue 20):
%% three Erlang nodes a, b, d (connect_all, pg started) and the cnode program
%% with --visible. Partitions are made with erlang:disconnect_node/1 on every
%% node of one side (nothing dials back until the test heals with a ping).
%% - Name clashes: a C worker holds each name; the C node is cut off alone,
%%   b registers the names for Erlang processes, the partition heals. With the
%%   C node's name sorting below the Erlang nodes' it resolves the clashes
%%   itself (global's exchange_names: the lower node resolves); above, the
%%   Erlang side does. Checked: the same owner on every node and in the C
%%   node's own table, and the loser killed or told as global's resolver does.
%% - The Erlang side resolving with the C worker's pid as Pid2 (d cut off from
%%   a, b and the C node): the rpc of global:resolve_it reaches the C node's
%%   rex, which has the asker run it (spawn_relay.c).
%% - d heals through the C node first (its first connection after the cut is
%%   to the C node): the C node leaves d's session to a and b (and has them
%%   connect to d when d reaches only it); every node agrees on every name.
%% - prevent_overlapping_partitions: a and b lose their connection; the C
%%   node answers lost_connection as global does (remove_connection), so the
%%   partitions do not overlap through it; after the heal, one fully
%%   connected cluster again. Forged remove_connection messages drop nothing.
%% - pg: the C node monitors each peer scope; when a peer's scope process
%%   dies, the members it told the C node of go at once (not at nodedown), and
%%   the restarted scope syncs again.
-module(visible_heal_tests).
-include_lib("eunit/include/eunit.hrl").

-define(KINDS, [exit_c, notify_c, notify_all_c, default_local]).

clash_test_() ->
    [{"C node sorts below the Erlang nodes: it resolves",
      {timeout, 240, fun() -> with(fun(Ctx) -> c_alone(Ctx, below) end) end}},
     {"C node sorts above the Erlang nodes: they resolve",
      {timeout, 240, fun() -> with(fun(Ctx) -> c_alone(Ctx, above) end) end}},
     {"an Erlang node resolves on the C node (relay)",
      {timeout, 240, fun() -> with(fun(Ctx) -> erlang_alone(Ctx) end) end}}].

pop_test_() ->
    [{timeout, 180, fun() -> with(fun overlapping_partition/1) end},
     {timeout, 120, fun() -> with(fun forged_pop_messages/1) end},
     {timeout, 120, fun() -> with(fun stale_session_messages/1) end}].

pg_test_() ->
    {timeout, 120, fun() -> with(fun pg_scope_restart/1) end}.

in_sync_test_() ->
    {timeout, 120, fun() -> with(fun in_sync_init_connect/1) end}.

through_c_test_() ->
    [{"an Erlang node heals through the C node first (C sorts " ++ atom_to_list(O) ++ ")",
      {timeout, 180, fun() -> with(fun(Ctx) -> heal_through_c(Ctx, O, true) end) end}}
     || O <- [below, above]] ++
    [{"an Erlang node reaches only the C node: the C node has the others connect",
      {timeout, 180, fun() -> with(fun(Ctx) -> heal_through_c(Ctx, below, false) end) end}}].

with(F) -> cnode_bridge_test:with(F).

%%% --------------------------------------------------------------- cluster

%% a, b, d synced, then the C node (named to sort below or above them),
%% connected by a ping from a (no --connect: it must not dial back by itself).
cluster(Ctx, Order) -> cluster(Ctx, Order, "false").

cluster(Ctx, Order, Pop) ->
    Args = ["-connect_all", "true", "-kernel", "start_pg", "true",
            "-kernel", "prevent_overlapping_partitions", Pop],
    Ns = [begin
              {ok, P, N} = cnode_bridge_test:start_node(Ctx, #{name => Nm, args => Args}),
              {P, N}
          end || Nm <- ["a", "b", "d"]],
    [{A, _}, {_, NB}, {_, ND}] = Ns,
    pong = cnode_bridge_test:call(A, net_adm, ping, [NB]),
    pong = cnode_bridge_test:call(A, net_adm, ping, [ND]),
    [ok = cnode_bridge_test:call(P, global, sync, []) || {P, _} <- Ns],
    %% Upper-case letters sort below every lower-case one.
    {ok, H, CN} = cnode_bridge_test:start_cnode(
                    Ctx, #{name => case Order of below -> "A"; above -> "z" end,
                           args => ["--demo", "--visible"]}),
    pong = cnode_bridge_test:call(A, net_adm, ping, [CN]),
    [true = cnode_bridge_test:wait_until(
              fun() -> lists:member(CN, cnode_bridge_test:call(P, erlang, nodes, [])) end, 30000)
     || {P, _} <- Ns],
    [ok = sync_on(P) || {P, _} <- Ns],
    %% global:sync() may return before a node's `resolved` reached C.
    [true = cnb_cnode:global_resolved(P, CN) || {P, _} <- Ns],
    #{nodes => Ns, cnode => CN, handle => H}.

peers(#{nodes := Ns}) -> [P || {P, _} <- Ns].

sync_on(P) -> cnode_bridge_test:call(P, global, sync, [], 60000).

%% Cuts the nodes of Side (peers) from the nodes Others (names).
cut(Side, Others) ->
    [true = cnode_bridge_test:call(P, erlang, disconnect_node, [N]) || P <- Side, N <- Others],
    [true = cnode_bridge_test:wait_until(
              fun() -> not lists:member(N, cnode_bridge_test:call(P, erlang, nodes, [])) end,
              10000) || P <- Side, N <- Others],
    ok.

%% The owner of Name on every Erlang node, then in the C node's own table.
owners(#{cnode := CN} = Cl, Name) ->
    [cnode_bridge_test:call(P, global, whereis_name, [Name]) || P <- peers(Cl)]
        ++ [c_whereis(hd(peers(Cl)), CN, Name)].

c_whereis(P, CN, Name) ->
    cnode_bridge_test:call(P, gen_server, call, [{probe, CN}, {global_whereis, Name}, 20000],
                           30000).

agreed(Cl, Names) ->
    lists:all(fun(Nm) -> length(lists:usort(owners(Cl, Nm))) =:= 1 end, Names).

%% A C worker (probe) holding {heal, K}, registered from C with the built-in
%% method of K, or from a with global's default (a fun local to global).
c_owner(A, CN, Rec, K) ->
    {ok, W} = cnode_bridge_test:call(A, gen_server, call, [{probe, CN}, spawn]),
    ok = cnode_bridge_test:call(A, gen_server, call, [W, {subscribe, Rec}]),
    Name = {heal, K, erlang:unique_integer([positive])},
    yes = case K of
              exit_c -> cnode_bridge_test:call(A, gen_server, call,
                                                [W, {global_register, Name, random_exit}]);
              notify_c -> cnode_bridge_test:call(A, gen_server, call,
                                                  [W, {global_register, Name, random_notify}]);
              notify_all_c -> cnode_bridge_test:call(A, gen_server, call,
                                                      [W, {global_register, Name, notify_all}]);
              default_local -> cnode_bridge_test:call(A, global, register_name, [Name, W], 30000)
          end,
    {W, Name}.

watch(P, Rec, Pid) -> ok = cnode_bridge_test:call(P, global_resolver_tests, ask, [Rec, {watch, Pid}]).
dump(P, Rec) -> cnode_bridge_test:call(P, global_resolver_tests, ask, [Rec, dump]).

%%% --------------------------------------------------------------- clashes

%% The C node alone on one side; b takes every name meanwhile; a heals.
c_alone(Ctx, Order) ->
    Cl = #{cnode := CN} = cluster(Ctx, Order),
    [A, B, _D] = Ps = peers(Cl),
    %% global runs the method of the resolving side's entry: ours below, the
    %% Erlang process's (global's default, random_exit_name) above.
    Ran = case Order of below -> fun(K) -> K end; above -> fun(_) -> default_local end end,
    run_clash(Ctx, Cl, ?KINDS, Ran, A, B, fun() -> cut(Ps, [CN]) end,
              fun() -> pong = cnode_bridge_test:call(A, net_adm, ping, [CN]) end).

%% d alone on one side (the C node stays with a and b); d takes the names; d
%% heals. a and b resolve their clashes with d (a_ and b_ sort below d_) by
%% rpc to node(Pid2): the C node. d also runs a session of its own with the
%% C node (which presents itself as a partition of its own), resolving with
%% its entry's method, so only kinds whose outcome is the same either way
%% (random_exit_name on both sides) are checked.
erlang_alone(Ctx) ->
    Cl = #{nodes := [{A, NA}, {_, NB}, {D, _}], cnode := CN} = cluster(Ctx, above),
    run_clash(Ctx, Cl, [exit_c, default_local], fun(K) -> K end, A, D,
              fun() -> cut([D], [NA, NB, CN]) end,
              fun() ->
                      pong = cnode_bridge_test:call(D, net_adm, ping, [NA]),
                      pong = cnode_bridge_test:call(D, net_adm, ping, [NB])
              end).

%% Kinds: the names made; Ran(K): the kind whose resolver global runs.
run_clash(Ctx, #{cnode := CN, handle := H} = Cl, Kinds, Ran, A, Taker, Cut, Heal) ->
    RecA = cnode_bridge_test:call(A, global_resolver_tests, recorder, []),
    RecT = cnode_bridge_test:call(Taker, global_resolver_tests, recorder, []),
    Ws = [{K, c_owner(A, CN, RecA, K)} || K <- Kinds],
    Names = [Nm || {_, {_, Nm}} <- Ws],
    [?assertEqual({K, [W, W, W, W]}, {K, owners(Cl, Nm)}) || {K, {W, Nm}} <- Ws],
    [watch(A, RecA, W) || {_, {W, _}} <- Ws],
    Cut(),
    true = cnode_bridge_test:wait_until(
             fun() -> lists:all(fun(Nm) -> cnode_bridge_test:call(Taker, global, whereis_name, [Nm])
                                               =:= undefined end, Names) end, 10000),
    Es = [begin
              {E, yes} = cnode_bridge_test:call(Taker, global_resolver_tests, erl_owner, [Nm, RecT]),
              watch(Taker, RecT, E),
              {K, E}
          end || {K, {_, Nm}} <- Ws],
    Heal(),
    [?assertEqual(ok, sync_on(P)) || P <- peers(Cl)],
    Agreed = cnode_bridge_test:wait_until(fun() -> agreed(Cl, Names) end, 20000),
    timer:sleep(1000), %% notifications and kills still on their way
    %% Monitors again (one across the cut fired noconnection): a dead pid
    %% answers noproc.
    [watch(A, RecA, W) || {_, {W, _}} <- Ws],
    [watch(Taker, RecT, E) || {_, E} <- Es],
    timer:sleep(500),
    RecordA = dump(A, RecA),
    RecordT = dump(Taker, RecT),
    Out = [L || L <- cnode_bridge_test:cnode_output(Ctx, H),
                binary:match(L, <<"[warning]">>) =/= nomatch],
    Checks = [{K, check(Ran(K), W, proplists:get_value(K, Es), Nm, owners(Cl, Nm), RecordA, RecordT)}
              || {K, {W, Nm}} <- Ws],
    ?debugFmt("~p", [Checks]),
    ?assertEqual({true, [], [{K, ok} || K <- Kinds]},
                 {Agreed, [L || L <- Out, binary:match(L, <<"heal">>) =/= nomatch], Checks}),
    ok.

%% ok, or what differs from what global does for Erlang processes.
check(K, W, E, Name, Owners, RecordA, RecordT) ->
    {Min, Max} = case node(E) < node(W) of true -> {E, W}; false -> {W, E} end,
    Told = fun(P) -> lists:usort([M || {probe_info, Q, M} <- RecordA, Q =:= P] ++
                                     [M || {e_info, Q, M} <- RecordT, Q =:= P]) end,
    Down = fun(P) -> [R || {'DOWN', _, process, Q, R} <- RecordA ++ RecordT, Q =:= P,
                           R =/= noconnection] =/= [] end,
    Got = #{owners => Owners, min_down => Down(Min), max_down => Down(Max),
            min_told => Told(Min), max_told => Told(Max)},
    Want = case K of
               notify_c -> #{owners => [Min, Min, Min, Min], min_down => false, max_down => false,
                             min_told => [], max_told => [{global_name_conflict, Name}]};
               notify_all_c -> #{owners => [undefined, undefined, undefined, undefined],
                                 min_down => false, max_down => false,
                                 min_told => [{global_name_conflict, Name, Max}],
                                 max_told => [{global_name_conflict, Name, Min}]};
               _ -> #{owners => [Min, Min, Min, Min], min_down => false, max_down => true,
                      min_told => [], max_told => []}
           end,
    case Got of Want -> ok; _ -> {got, Got, want, Want} end.

%%% --------------------------------------------------------------- in sync

%% b heard in_sync from the C node after a's session with it, so it counts
%% the C node as synced. An init_connect from b after that (its nodeup came
%% before a's new_nodes: a race seen in the heal tests on OTP 27) is not
%% answered, as global does when it runs no session with the node: an
%% init_connect_ack would not match b's tags, and b's global would restart
%% the connect, dropping every name of the C node's pids with no session to
%% bring them back. Here b's own init_connect is cast by hand.
in_sync_init_connect(Ctx) ->
    Cl = #{nodes := [{A, _}, {B, _}, _], cnode := CN} = cluster(Ctx, below),
    {ok, W} = cnode_bridge_test:call(A, gen_server, call, [{probe, CN}, spawn]),
    Name = {in_sync, erlang:unique_integer([positive])},
    yes = cnode_bridge_test:call(A, gen_server, call, [W, {global_register, Name, random_exit}]),
    ?assertEqual([W, W, W, W], owners(Cl, Name)),
    Init = fun() ->
                   gen_server:cast({global_name_server, CN},
                                   {init_connect, {8, erlang:unique_integer([monotonic])}, node(),
                                    {locker, no_longer_a_pid, #{}, whereis(global_name_server)}})
           end,
    ok = cnode_bridge_test:call(B, erlang, apply, [Init, []]),
    timer:sleep(1000),
    ?assertEqual([W, W, W, W], owners(Cl, Name)),
    ?assertEqual(ok, sync_on(B)).

%%% --------------------------------------------------------------- through C

%% d cut off from a, b and the C node; d takes names that C workers hold
%% (random_exit, random_notify, notify_all) and one a process on a holds
%% (notify_all), then heals through the C node first: its connection to the
%% C node comes up before its connections to a and b. The C node knows a and
%% b, so it must leave d's session to them. Its own session would settle the
%% clashes between it and d only (sorting below d, it resolves its workers'
%% names), and a's session would then give d back the names d had just
%% deleted. Checked: every node, the C node's table included, agrees on
%% every name, and the notify_all names are gone everywhere, as in a cluster
%% of Erlang nodes. Seen as a rare failure of the reliability suite's
%% one_off pattern. Without PingOthers d never connects to a or b itself:
%% the C node, holding d's init_connect for a second, asks them to.
heal_through_c(Ctx, Order, PingOthers) ->
    Cl = #{nodes := [{A, NA}, {_, NB}, {D, _}], cnode := CN} = cluster(Ctx, Order),
    Hold = fun(Name) ->
                   fun() ->
                           P = spawn(fun() -> receive stop -> ok end end),
                           {P, global:register_name(Name, P, fun global:notify_all_name/3)}
                   end
           end,
    Beam = {through_c, beam, erlang:unique_integer([positive])},
    {_, yes} = cnode_bridge_test:call(A, erlang, apply, [Hold(Beam), []]),
    RecA = cnode_bridge_test:call(A, global_resolver_tests, recorder, []),
    Cs = [{K, element(2, c_owner(A, CN, RecA, K))} || K <- [exit_c, notify_c, notify_all_c]],
    Names = [Beam | [Nm || {_, Nm} <- Cs]],
    true = cnode_bridge_test:wait_until(fun() -> agreed(Cl, Names) end, 10000),
    cut([D], [NA, NB, CN]),
    true = cnode_bridge_test:wait_until(
             fun() -> lists:all(fun(Nm) -> cnode_bridge_test:call(D, global, whereis_name, [Nm])
                                               =:= undefined end, Names) end, 10000),
    [{_, yes} = cnode_bridge_test:call(D, erlang, apply, [Hold(Nm), []]) || Nm <- Names],
    pong = cnode_bridge_test:call(D, net_adm, ping, [CN]),
    case PingOthers of
        true ->
            timer:sleep(300),
            pong = cnode_bridge_test:call(D, net_adm, ping, [NA]),
            pong = cnode_bridge_test:call(D, net_adm, ping, [NB]);
        false ->
            ok
    end,
    ?assert(cnode_bridge_test:wait_until(
              fun() -> lists:usort(cnode_bridge_test:call(D, erlang, nodes, [])) =:=
                           lists:usort([NA, NB, CN]) end, 10000)),
    [?assertEqual(ok, sync_on(P)) || P <- peers(Cl)],
    Agreed = cnode_bridge_test:wait_until(fun() -> agreed(Cl, Names) end, 20000),
    Gone = [Beam, proplists:get_value(notify_all_c, Cs)],
    ?assertEqual({true, [[undefined, undefined, undefined, undefined] || _ <- Gone]},
                 {Agreed, [owners(Cl, Nm) || Nm <- Gone]}).

%%% --------------------------------------------------------------- pg

%% b's pg scope process dies (its supervisor starts a new one): the C node
%% drops b's members at once (a monitor on the scope, as pg holds), then the
%% new scope discovers the C node and its members come back.
pg_scope_restart(Ctx) ->
    Cl = #{nodes := [{A, _}, {B, _}, _], cnode := CN} = cluster(Ctx, above),
    Join = fun() ->
                   cnode_bridge_test:call(
                     B, erlang, apply,
                     [fun() ->
                              P = spawn(fun() -> receive stop -> ok end end),
                              ok = pg:join(heal_group, P),
                              P
                      end, []])
           end,
    P1 = Join(),
    CMembers = fun() -> cnode_bridge_test:call(A, gen_server, call,
                                               [{probe, CN}, {pg_members, heal_group}]) end,
    ?assert(cnode_bridge_test:wait_until(fun() -> CMembers() =:= [P1] end, 10000)),
    Old = cnode_bridge_test:call(B, erlang, whereis, [pg]),
    true = cnode_bridge_test:call(B, erlang, exit, [Old, kill]),
    %% P1's membership went with the scope (its table too): the C node must
    %% not list it any longer.
    ?assert(cnode_bridge_test:wait_until(fun() -> CMembers() =:= [] end, 5000)),
    ?assert(cnode_bridge_test:wait_until(
              fun() -> is_pid(cnode_bridge_test:call(B, erlang, whereis, [pg])) end, 5000)),
    %% The new scope syncs with the C node: a new member on b shows.
    P2 = Join(),
    ?assert(cnode_bridge_test:wait_until(fun() -> CMembers() =:= [P2] end, 10000)),
    %% And the C node's own members reach the new scope.
    {ok, W} = cnode_bridge_test:call(A, gen_server, call,
                                     [{cache_sup, CN}, {start, heal_pg, x}, 30000]),
    ?assert(cnode_bridge_test:wait_until(
              fun() -> cnode_bridge_test:call(B, pg, get_members, [cache_workers]) =:= [W] end,
              10000)),
    _ = Cl.

%%% --------------------------------------------------------------- pop

%% With prevent_overlapping_partitions on the Erlang nodes: a loses b. a and b
%% each tell every node they know (lost_connection), and every node drops the
%% other node of each pair: d and, with its answer, the C node. The result
%% must be partitions that do not overlap (without the C node's answer it stays
%% connected to both a and b). Then the heal (pings) makes one fully connected
%% cluster again, global synced everywhere and the C worker's name known on
%% every node.
overlapping_partition(Ctx) ->
    Cl = #{nodes := [{A, NA}, {B, NB}, {D, ND}], cnode := CN, handle := H} = cluster(Ctx, above, "true"),
    {ok, W} = cnode_bridge_test:call(A, gen_server, call,
                                     [{cache_sup, CN}, {start, pop_media, x}, 30000]),
    true = cnode_bridge_test:call(A, erlang, disconnect_node, [NB]),
    Conn = fun(P) -> lists:sort(cnode_bridge_test:call(P, erlang, nodes, [])) end,
    Ps = [{A, NA}, {B, NB}, {D, ND}],
    %% The partitions must not overlap: connections (as the Erlang nodes see
    %% them, the C node's included) form fully connected groups, and the C node
    %% is in at most one of a's and b's. Which nodes end up together depends
    %% on the order the lost_connection messages arrive in; an Erlang node
    %% makes the same choices.
    Apart = fun() ->
                    E = lists:usort(lists:append([[{Me, N}, {N, Me}] || {P, Me} <- Ps, N <- Conn(P)])),
                    Ns = [NA, NB, ND, CN],
                    Trans = lists:all(fun({X, Y}) ->
                                              lists:all(fun(Z) -> Z =:= X orelse
                                                                      not lists:member({Y, Z}, E) orelse
                                                                      lists:member({X, Z}, E)
                                                        end, Ns)
                                      end, E),
                    Trans andalso not (lists:member({NA, CN}, E) andalso lists:member({NB, CN}, E))
            end,
    Settled = cnode_bridge_test:wait_until(Apart, 15000),
    ?debugFmt("a ~p~nb ~p~nd ~p~nC: ~p", [Conn(A), Conn(B), Conn(D),
        [L || L <- cnode_bridge_test:cnode_output(Ctx, H), binary:match(L, <<"global">>) =/= nomatch]]),
    ?assert(Settled),
    timer:sleep(1000), %% nothing dials back meanwhile
    ?assert(Apart()),
    %% Heal: one fully connected cluster, with the C node in it.
    pong = cnode_bridge_test:call(A, net_adm, ping, [NB]),
    pong = cnode_bridge_test:call(A, net_adm, ping, [ND]),
    pong = cnode_bridge_test:call(B, net_adm, ping, [ND]),
    All = lists:sort([NA, NB, ND, CN]),
    [?assert(cnode_bridge_test:wait_until(fun() -> lists:sort([Me | Conn(P)]) =:= All end, 30000))
     || {P, Me} <- [{A, NA}, {B, NB}, {D, ND}]],
    [?assertEqual(ok, sync_on(P)) || P <- peers(Cl)],
    ?assert(cnode_bridge_test:wait_until(
              fun() -> owners(Cl, {cache, pop_media}) =:= [W, W, W, W] end, 20000)).

%% remove_connection naming another node than its sender, and malformed
%% lost_connection / remove_connection messages: the C node drops no
%% connection (global sends remove_connection with its own name only).
forged_pop_messages(Ctx) ->
    Cl = #{nodes := [{A, NA}, {B, _}, _], cnode := CN} = cluster(Ctx, above, "true"),
    Send = fun() ->
                   [{global_name_server, CN} ! M
                    || M <- [{remove_connection, NA}, {remove_connection, "x"},
                             {remove_connection}, {lost_connection, 1, 2, 3, 4},
                             {lost_connection, NA, 1 bsl 70, 1, node()},
                             {lost_connection, NA, x, y, z}]],
                   ok
           end,
    ok = cnode_bridge_test:call(B, erlang, apply, [Send, []]),
    timer:sleep(1000),
    [?assert(lists:member(CN, cnode_bridge_test:call(P, erlang, nodes, []))) || P <- peers(Cl)],
    ?assertEqual(ok, sync_on(A)).

%% exchange, resolved and lock_set casts from a node the C node ran a session
%% with (a), but with a tag that is not the C node's session tag (a session
%% that ended, or forged): dropped, as global drops them when its
%% sync_tag_my differs. The names they carry do not reach the C node's table,
%% and no lock_set answer comes back.
stale_session_messages(Ctx) ->
    Cl = #{nodes := [{A, _}, _, _], cnode := CN} = cluster(Ctx, above),
    N1 = {stale, exchange, erlang:unique_integer([positive])},
    N2 = {stale, resolved, erlang:unique_integer([positive])},
    Send = fun() ->
                   P = spawn(fun() -> receive stop -> ok end end),
                   M = {global, random_exit_name},
                   Bad = 1 bsl 40 + 7,
                   [gen_server:cast({global_name_server, CN}, C)
                    || C <- [{exchange, node(), [{N1, P, M}], [], Bad},
                             {resolved, node(), [{insert, {N2, P, M}}], [], unused, [], Bad},
                             {lock_set, whereis(global_name_server), true, [], Bad}]],
                   ok
           end,
    ok = cnode_bridge_test:call(A, erlang, apply, [Send, []]),
    timer:sleep(1000),
    ?assertEqual([undefined, undefined], [c_whereis(A, CN, Nm) || Nm <- [N1, N2]]),
    ?assertEqual(ok, sync_on(A)),
    _ = Cl.
