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
     ?T(pg_hostile_messages, 120),
     {"names_known_locally", {timeout, 180, fun names_known_locally/0}},
     ?T(c_worker_names_local, 120),
     ?T(locks_refuse_other_requesters, 120),
     ?T(global_hostile_messages, 180)].

with_cluster(F) ->
    cnode_bridge_test:with(fun(Ctx) -> F(Ctx, cluster(Ctx, ["--visible"])) end).

cluster(Ctx, CArgs) -> cluster(Ctx, CArgs, fun(_) -> ok end).

%% Pre(Nodes) runs once the Erlang nodes are synced, before the C node starts.
cluster(Ctx, CArgs, Pre) ->
    Ns = [begin
              {ok, P, N} = cnode_bridge_test:start_node(
                             Ctx, #{name => Nm, args => ["-connect_all", "true", "-kernel", "start_pg", "true"]}),
              {P, N}
          end || Nm <- ["a", "b", "d"]],
    [{A, NA}, {_, NB}, {_, ND}] = Ns,
    pong = cnode_bridge_test:call(A, net_adm, ping, [NB]),
    pong = cnode_bridge_test:call(A, net_adm, ping, [ND]),
    [ok = cnode_bridge_test:call(P, global, sync, []) || {P, _} <- Ns],
    Pre(Ns),
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
    %% A C worker's name (the demo's cache_sup: the C node's own registrar).
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

%%% -------------------------------------------------------- :global's tables

%% rex suspended on every Erlang node: a C lookup that went through an
%% anchor's rex would time out (the probe gives undefined after 5 s).
without_rex(Cl, F) ->
    [ok = cnode_bridge_test:call(P, sys, suspend, [rex]) || P <- peers(Cl)],
    try F() after [ok = cnode_bridge_test:call(P, sys, resume, [rex]) || P <- peers(Cl)] end.

c_whereis(CN, P, Name) ->
    cnode_bridge_test:call(P, gen_server, call, [{probe, CN}, {global_whereis, Name}, 20000], 30000).

sleeper(P) -> cnode_bridge_test:call(P, erlang, spawn, [timer, sleep, [infinity]]).

%% Names registered on Erlang nodes before the C node connected (they come in
%% the connect session's exchange) and after (the register multi_call) are
%% found by the C side from its own table; an unregister and the end of a
%% name's process take them out of it.
names_known_locally() ->
    cnode_bridge_test:with(
      fun(Ctx) ->
              Self = self(),
              Pre = fun([{_, _}, {B, _}, _]) ->
                            Pid = sleeper(B),
                            yes = cnode_bridge_test:call(B, global, register_name, [vis_pre, Pid]),
                            Self ! {pre, Pid}
                    end,
              #{cnode := CN} = Cl = cluster(Ctx, ["--visible"], Pre),
              Pre1 = receive {pre, P1} -> P1 end,
              [A, _, D] = peers(Cl),
              [ok = sync_on(P) || P <- peers(Cl)],
              Post = sleeper(D),
              yes = cnode_bridge_test:call(D, global, register_name, [{vis, post}, Post], 60000),
              without_rex(Cl, fun() ->
                  ?assertEqual(Pre1, c_whereis(CN, A, vis_pre)),
                  ?assertEqual(Post, c_whereis(CN, A, {vis, post})),
                  ?assertEqual(undefined, c_whereis(CN, A, vis_never))
              end),
              ok = cnode_bridge_test:call(A, global, unregister_name, [{vis, post}], 60000),
              true = cnode_bridge_test:call(A, erlang, exit, [Pre1, kill]),
              without_rex(Cl, fun() ->
                  ?assert(cnode_bridge_test:wait_until(
                            fun() -> c_whereis(CN, A, vis_pre) =:= undefined end, 20000)),
                  ?assertEqual(undefined, c_whereis(CN, A, {vis, post}))
              end)
      end).

%% A C worker's name (taken by the C node's registrar) is in the C side's
%% table too, and leaves it when the worker stops.
c_worker_names_local(_Ctx, #{cnode := CN} = Cl) ->
    [A | _] = peers(Cl),
    W = start_cache(A, CN, loc1),
    %% (The registrar put it in the table at once; the sync is harmless.)
    [ok = sync_on(P) || P <- peers(Cl)],
    without_rex(Cl, fun() -> ?assertEqual(W, c_whereis(CN, A, {cache, loc1})) end),
    ok = cnode_bridge_test:call(A, gen_server, call, [W, stop, 10000]),
    without_rex(Cl, fun() ->
        ?assert(cnode_bridge_test:wait_until(
                  fun() -> c_whereis(CN, A, {cache, loc1}) =:= undefined end, 20000))
    end).

%% global:set_lock on the C node alone: a second requester of a resource held
%% by an Erlang process is refused (as global does), and gets it once the
%% holder deletes the lock or dies.
locks_refuse_other_requesters(_Ctx, #{cnode := CN} = Cl) ->
    [A, B, _] = peers(Cl),
    Holder = fun(Res, Req) ->
                     cnode_bridge_test:call(
                       A, erlang, apply,
                       [fun() ->
                                Me = self(),
                                H = spawn(fun() ->
                                                  Me ! {got, global:set_lock({Res, Req}, [CN], 0)},
                                                  receive release ->
                                                          global:del_lock({Res, Req}, [CN]),
                                                          Me ! released,
                                                          receive stop -> ok end
                                                  end
                                          end),
                                receive {got, G} -> {H, G} end
                        end, []])
             end,
    Try = fun(Res) -> cnode_bridge_test:call(B, global, set_lock, [{Res, other}, [CN], 0], 60000) end,
    Free = fun(Res) -> cnode_bridge_test:call(B, global, del_lock, [{Res, other}, [CN]], 60000) end,
    {H1, true} = Holder(vis_res1, req1),
    ?assertEqual(false, Try(vis_res1)),
    %% The same requester id from another process shares it (global's rule).
    ?assertEqual(true, cnode_bridge_test:call(B, global, set_lock, [{vis_res1, req1}, [CN], 0], 60000)),
    ?assertEqual(true, cnode_bridge_test:call(B, global, del_lock, [{vis_res1, req1}, [CN]], 60000)),
    ?assertEqual(false, Try(vis_res1)),
    true = cnode_bridge_test:call(A, erlang, exit, [H1, kill]),
    ?assert(cnode_bridge_test:wait_until(fun() -> Try(vis_res1) end, 20000)),
    true = Free(vis_res1),
    {H2, true} = Holder(vis_res2, req2),
    ?assertEqual(false, Try(vis_res2)),
    cnode_bridge_test:call(A, erlang, send, [H2, release]),
    ?assert(cnode_bridge_test:wait_until(fun() -> Try(vis_res2) end, 20000)),
    true = Free(vis_res2).

%% Malformed global_name_server messages are dropped; a flood of registrations
%% past the table's cap (65,536) keeps what fits, logs once, and the node
%% still answers.
global_hostile_messages(Ctx, #{cnode := CN, handle := H} = Cl) ->
    [A, B, _] = peers(Cl),
    [ok = sync_on(P) || P <- peers(Cl)],
    Bad = [{'$gen_call', {self, t}, {register, x}},
           {'$gen_call', {self, t}, {register, n, notapid, m}},
           {'$gen_call', {self, t}, {register_ext, n, self, m}},
           {'$gen_call', {self, t}, {set_lock, notatuple}},
           {'$gen_call', {self, t}, {set_lock, {a}}},
           {'$gen_call', {self, t}, {del_lock, {a, b, c}}},
           {'$gen_call', {self, t}, {unregister}},
           {'$gen_cast', {exchange, n, [junk, {a, notpid, m}, {a}], [], 1}},
           {'$gen_cast', {new_nodes, n, [{insert, junk}, {delete}, {insert}, x], [], [], []}},
           {'$gen_cast', {new_nodes, n, notalist, [], [], []}},
           {'$gen_cast', {resolved, n, [{insert, {a, notpid, m}}], [], unused, [], 1}}],
    Flood = fun() ->
                    Me = self(),
                    S = spawn(fun() ->
                                      Sub = fun F(self) -> self(); F(T) when is_tuple(T) ->
                                                    list_to_tuple([F(E) || E <- tuple_to_list(T)]);
                                                F(T) -> T end,
                                      [{global_name_server, CN} ! Sub(M) || M <- Bad],
                                      [{global_name_server, CN} !
                                           {'$gen_call', {self(), I}, {register, {flood, I}, self(), m}}
                                       || I <- lists:seq(1, 70000)],
                                      %% Answered in order: once this reply is
                                      %% here, every register before it was taken.
                                      {global_name_server, CN} !
                                          {'$gen_call', {self(), done}, {del_lock, {x, y}}},
                                      receive {done, true} -> ok end,
                                      Me ! sent,
                                      receive stop -> ok end
                              end),
                    receive sent -> S end
            end,
    S = cnode_bridge_test:call(B, erlang, apply, [Flood, []], 120000),
    ?assertEqual(S, c_whereis(CN, A, {flood, 1})),
    ?assertEqual(S, c_whereis(CN, A, {flood, 65536})),
    ?assertEqual(undefined, c_whereis(CN, A, {flood, 65537})),
    ?assert(cnode_bridge_test:wait_until(
              fun() -> lists:any(fun(L) -> binary:match(L, <<"name table full">>) =/= nomatch end,
                                 cnode_bridge_test:cnode_output(Ctx, H)) end, 30000)),
    %% The flooder's end takes its names out (our monitors' DOWN).
    cnode_bridge_test:call(B, erlang, send, [S, stop]),
    ?assert(cnode_bridge_test:wait_until(fun() -> c_whereis(CN, A, {flood, 1}) =:= undefined end,
                                         60000)),
    ?assertEqual(hi, cnode_bridge_test:call(A, gen_server, call, [{echo, CN}, hi, 10000])),
    W = start_cache(A, CN, hostile1),
    [ok = sync_on(P) || P <- peers(Cl)],
    ?assertEqual(W, c_whereis(CN, A, {cache, hostile1})).
