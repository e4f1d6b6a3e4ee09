%% Integration tests of visible mode (issue 20): three Erlang nodes a, b, d (one
%% visible cluster, OTP's default connect_all and prevent_overlapping_partitions)
%% and the cnode program with --visible connected to a only; each Erlang node
%% runs the default pg scope. The C node must be
%% in nodes() on every node (global's connect_all brings b and d to it), and
%% global:sync() must complete everywhere, as must registrations made after it.
-module(visible_tests).
-include_lib("eunit/include/eunit.hrl").

-define(T(Name, Secs), {atom_to_list(Name), {timeout, Secs, fun() -> with_cluster(fun Name/2) end}}).

visible_test_() ->
    [?T(in_nodes_everywhere, 120),
     ?T(global_sync_completes, 120),
     ?T(registrations_do_not_stall, 120),
     ?T(hidden_stays_hidden, 120),
     ?T(pg_members_everywhere, 120),
     ?T(pg_worker_exit_leaves_everywhere, 120),
     ?T(pg_kill9_leaves_everywhere, 120),
     ?T(pg_hostile_messages, 120)].

with_cluster(F) ->
    cnode_bridge_test:with(fun(Ctx) -> F(Ctx, cluster(Ctx, ["--visible"])) end).

cluster(Ctx, CArgs) ->
    Ns = [begin
              {ok, P, N} = cnode_bridge_test:start_node(
                             Ctx, #{name => Nm, args => ["-connect_all", "true", "-kernel", "start_pg", "true"]}),
              {P, N}
          end || Nm <- ["a", "b", "d"]],
    [{A, NA}, {_, NB}, {_, ND}] = Ns,
    pong = cnode_bridge_test:call(A, net_adm, ping, [NB]),
    pong = cnode_bridge_test:call(A, net_adm, ping, [ND]),
    [ok = cnode_bridge_test:call(P, global, sync, []) || {P, _} <- Ns],
    {ok, H, CN} = cnode_bridge_test:start_cnode(
                    Ctx, #{connect => [NA], args => ["--demo" | CArgs]}),
    true = cnode_bridge_test:wait_until(
             fun() -> lists:member(CN, cnode_bridge_test:call(A, erlang, nodes, [connected]))
             end, 10000),
    #{nodes => Ns, cnode => CN, handle => H}.

peers(#{nodes := Ns}) -> [P || {P, _} <- Ns].

%% global:sync() on a peer; a stall is a timeout of the peer call (a failure).
sync_on(P) -> cnode_bridge_test:call(P, global, sync, [], 60000).

in_nodes_everywhere(_Ctx, #{cnode := CN} = Cl) ->
    [?assert(cnode_bridge_test:wait_until(
               fun() -> lists:member(CN, cnode_bridge_test:call(P, erlang, nodes, [])) end,
               30000)) || P <- peers(Cl)],
    [?assertNot(lists:member(CN, cnode_bridge_test:call(P, erlang, nodes, [hidden])))
     || P <- peers(Cl)].

global_sync_completes(_Ctx, #{cnode := CN} = Cl) ->
    [?assertEqual(ok, sync_on(P)) || P <- peers(Cl)],
    %% Every node counts the C node as synced: global:sync() now has nothing
    %% to wait for, and a sync naming it alone completes too.
    [?assertEqual(ok, cnode_bridge_test:call(P, global, sync, [[CN]], 60000)) || P <- peers(Cl)].

registrations_do_not_stall(_Ctx, #{cnode := CN} = Cl) ->
    [ok = sync_on(P) || P <- peers(Cl)],
    [A, B, D] = peers(Cl),
    %% An Erlang process's name: set_lock and register go to every known node,
    %% the C node among them, which must answer.
    Pid = cnode_bridge_test:call(B, erlang, spawn, [timer, sleep, [infinity]]),
    ?assertEqual(yes, cnode_bridge_test:call(B, global, register_name, [vis_b, Pid], 60000)),
    [?assertEqual(Pid, cnode_bridge_test:call(P, global, whereis_name, [vis_b])) || P <- [A, D]],
    ?assertEqual(ok, cnode_bridge_test:call(D, global, unregister_name, [vis_b], 60000)),
    ?assertEqual(true, cnode_bridge_test:call(A, global, set_lock, [{vis_lock, self()}], 60000)),
    ?assertEqual(true, cnode_bridge_test:call(A, global, del_lock, [{vis_lock, self()}], 60000)),
    %% A C worker's name (the demo's cache_sup registers through an anchor).
    {ok, W} = cnode_bridge_test:call(A, gen_server, call,
                                     [{cache_sup, CN}, {start, vis_media, hello}, 30000]),
    [?assertEqual(W, cnode_bridge_test:call(P, global, whereis_name, [{cache, vis_media}]))
     || P <- [A, B, D]].

hidden_stays_hidden(Ctx, #{nodes := [{A, NA} | _]}) ->
    {ok, _, CN2} = cnode_bridge_test:start_cnode(Ctx, #{connect => [NA], args => []}),
    true = cnode_bridge_test:wait_until(
             fun() -> lists:member(CN2, cnode_bridge_test:call(A, erlang, nodes, [hidden])) end,
             10000),
    ?assertNot(lists:member(CN2, cnode_bridge_test:call(A, erlang, nodes, []))),
    ?assertEqual(ok, sync_on(A)).

%% The launcher's option: visible => true gives the flag, false or absent not.
launcher_option_test() ->
    {ok, On} = cnode_bridge_cnode:args(v1, #{visible => true}),
    {ok, Off} = cnode_bridge_cnode:args(v1, #{visible => false}),
    {ok, Default} = cnode_bridge_cnode:args(v1, #{}),
    ?assert(lists:member("--visible", On)),
    ?assertNot(lists:member("--visible", Off)),
    ?assertNot(lists:member("--visible", Default)),
    ?assertMatch({error, _}, cnode_bridge_cnode:args(v1, #{visible => yes})).

%%% ------------------------------------------------------------------ :pg

start_cache(P, CN, Id) ->
    {ok, W} = cnode_bridge_test:call(P, gen_server, call,
                                     [{cache_sup, CN}, {start, Id, {content, Id}}, 30000]),
    W.

members(P) -> cnode_bridge_test:call(P, pg, get_members, [pg, cache_workers]).

wait_members(Cl, Want) ->
    [?assert(cnode_bridge_test:wait_until(fun() -> lists:sort(members(P)) =:= lists:sort(Want) end,
                                          30000)) || P <- peers(Cl)].

pg_members_everywhere(_Ctx, #{cnode := CN} = Cl) ->
    [A, B, _] = peers(Cl),
    W1 = start_cache(A, CN, pg1),
    W2 = start_cache(B, CN, pg2),
    wait_members(Cl, [W1, W2]),
    %% A broadcast to the group (one send to each member, the pub/sub pattern)
    %% reaches the C workers: each answers its call.
    [?assertEqual({ok, {content, Id}},
                  cnode_bridge_test:call(B, gen_server, call, [W, get, 10000]))
     || {W, Id} <- [{W1, pg1}, {W2, pg2}]],
    Replies = cnode_bridge_test:call(
                B, erlang, apply,
                [fun() -> [gen_server:call(M, get, 10000) || M <- pg:get_members(cache_workers)] end,
                 []]),
    ?assertEqual([{ok, {content, pg1}}, {ok, {content, pg2}}], lists:sort(Replies)).

pg_worker_exit_leaves_everywhere(_Ctx, #{cnode := CN} = Cl) ->
    [A | _] = peers(Cl),
    W1 = start_cache(A, CN, pg3),
    W2 = start_cache(A, CN, pg4),
    wait_members(Cl, [W1, W2]),
    ok = cnode_bridge_test:call(A, gen_server, call, [W1, stop, 10000]),
    wait_members(Cl, [W2]).

pg_kill9_leaves_everywhere(Ctx, #{cnode := CN, handle := H} = Cl) ->
    [A | _] = peers(Cl),
    W1 = start_cache(A, CN, pg5),
    wait_members(Cl, [W1]),
    {ok, _} = cnode_bridge_test:kill_cnode(Ctx, H),
    wait_members(Cl, []).

%% Malformed and forged pg messages to the C node's scope (by name): dropped,
%% and the scope still works for the real ones.
pg_hostile_messages(_Ctx, #{cnode := CN} = Cl) ->
    [A, B, _] = peers(Cl),
    Bad = [garbage, {}, {discover}, {discover, self}, {discover, notapid}, {discover, self, extra},
           {join, notapid, g, x}, {join, self, g, [1, 2 | improper]}, {leave, self, x, notalist},
           {'$gen_cast', garbage}, {'$gen_cast', {sync, self, notalist}},
           {'$gen_cast', {sync, self, [{g, [notapid]}, junk]}}, {'$gen_cast', {sync, self, [{g}]}},
           {'$gen_call', {self, tag}, anything}, lists:seq(1, 1000)],
    Send = fun() ->
                   [{pg, CN} ! (fun F(self) -> self(); F(T) when is_tuple(T) ->
                                            list_to_tuple([F(E) || E <- tuple_to_list(T)]);
                                        F(T) -> T end)(M) || M <- Bad],
                   ok
           end,
    ok = cnode_bridge_test:call(B, erlang, apply, [Send, []]),
    W1 = start_cache(A, CN, pg6),
    wait_members(Cl, [W1]),
    ?assertEqual(hi, cnode_bridge_test:call(A, gen_server, call, [{echo, CN}, hi, 10000])).
