%% Integration tests of visible mode's registrar (issue 20): C workers' :global
%% names taken through global's own protocol (locks on every known node, the
%% register multi_call), with no anchor: rex is suspended on every Erlang node
%% while C registers, so a registration through an anchor's rex would time out.
%% Three Erlang nodes a, b, d (connect_all) and the cnode program with
%% --visible --demo, connected to a.
-module(visible_reg_tests).
-include_lib("eunit/include/eunit.hrl").

-define(T(Name, Secs), {atom_to_list(Name), {timeout, Secs, fun() -> with_cluster(fun Name/2) end}}).

visible_reg_test_() ->
    [?T(register_seen_everywhere_at_once, 120),
     ?T(unregister_and_re_register, 120),
     ?T(clash_c_first, 120),
     ?T(clash_erlang_first, 120),
     ?T(races_have_one_winner, 300),
     ?T(erlang_lock_blocks_until_released, 180),
     ?T(timed_out_registration_leaves_no_lock, 180),
     ?T(kill9_removes_names_everywhere, 120),
     ?T(hostile_messages_to_the_registrar, 120),
     ?T(node_gone_and_io_thread, 120),
     ?T(lock_holder_node_dies, 180),
     {"stalled_c_node_blocks_no_longer_than_a_tick",
      {timeout, 180, fun() -> cnode_bridge_test:with(fun stalled_c_node/1) end}}].

with_cluster(F) ->
    cnode_bridge_test:with(fun(Ctx) -> F(Ctx, cluster(Ctx)) end).

cluster(Ctx) ->
    Ns = [begin
              {ok, P, N} = cnode_bridge_test:start_node(
                             Ctx, #{name => Nm, args => ["-connect_all", "true"]}),
              {P, N}
          end || Nm <- ["a", "b", "d"]],
    [{A, NA}, {_, NB}, {_, ND}] = Ns,
    pong = cnode_bridge_test:call(A, net_adm, ping, [NB]),
    pong = cnode_bridge_test:call(A, net_adm, ping, [ND]),
    {ok, H, CN} = cnode_bridge_test:start_cnode(
                    Ctx, #{connect => [NA], args => ["--demo", "--visible"]}),
    Peers = [P || {P, _} <- Ns],
    true = cnode_bridge_test:wait_until(
             fun() -> lists:all(fun(P) -> lists:member(CN, cnode_bridge_test:call(P, erlang, nodes, []))
                                end, Peers)
             end, 30000),
    [ok = cnode_bridge_test:call(P, global, sync, [], 60000) || P <- Peers],
    %% Each node's sync session with C ended on C's side too.
    [true = cnb_cnode:global_resolved(P, CN) || P <- Peers],
    #{nodes => Ns, peers => Peers, cnode => CN, handle => H}.

%% rex suspended on every Erlang node while F runs.
without_rex(#{peers := Ps}, F) ->
    [ok = cnode_bridge_test:call(P, sys, suspend, [rex]) || P <- Ps],
    try F() after [ok = cnode_bridge_test:call(P, sys, resume, [rex]) || P <- Ps] end.

probe(#{peers := [A | _], cnode := CN}) ->
    {ok, P} = cnode_bridge_test:call(A, gen_server, call, [{probe, CN}, spawn, 10000]),
    P.

%% A call to probe P made from node A (the test runner is not in the cluster).
pcall(#{peers := [A | _]}, P, Req) ->
    cnode_bridge_test:call(A, gen_server, call, [P, Req, 60000], 70000).

c_register(Cl, P, Name) -> pcall(Cl, P, {global_register, Name, random_exit}).

whereis_all(#{peers := Ps}, Name) ->
    [cnode_bridge_test:call(P, global, whereis_name, [Name]) || P <- Ps].

c_whereis(#{cnode := CN} = Cl, Name) ->
    pcall(Cl, {probe, CN}, {global_whereis, Name}).

sleeper(P) -> cnode_bridge_test:call(P, erlang, spawn, [timer, sleep, [infinity]]).

%%% ------------------------------------------------------------------ tests

register_seen_everywhere_at_once(_Ctx, #{cnode := CN, peers := [A | _]} = Cl) ->
    P1 = probe(Cl),
    without_rex(Cl, fun() ->
        ?assertEqual(yes, c_register(Cl, P1, vr_one)),
        %% No global:sync(): the register multi_call reached every node.
        ?assertEqual([P1, P1, P1], whereis_all(Cl, vr_one)),
        ?assertEqual(P1, c_whereis(Cl, vr_one)),
        %% The demo's cache_sup: worker start + registration.
        {ok, W} = cnode_bridge_test:call(A, gen_server, call,
                                         [{cache_sup, CN}, {start, vr_media, x}, 30000]),
        ?assertEqual([W, W, W], whereis_all(Cl, {cache, vr_media})),
        %% The same name again for the same pid: yes (already its own).
        ?assertEqual(yes, c_register(Cl, P1, vr_one)),
        %% A second name for a pid that has one: no (global's check_dupname).
        ?assertEqual(no, c_register(Cl, P1, vr_one_more)),
        ?assertEqual([undefined, undefined, undefined], whereis_all(Cl, vr_one_more))
    end),
    %% Gone everywhere when the worker ends.
    ok = pcall(Cl, P1, {stop, normal}),
    ?assert(cnode_bridge_test:wait_until(
              fun() -> whereis_all(Cl, vr_one) =:= [undefined, undefined, undefined] end, 10000)).

unregister_and_re_register(_Ctx, Cl) ->
    P1 = probe(Cl),
    P2 = probe(Cl),
    without_rex(Cl, fun() ->
        yes = c_register(Cl, P1, vr_two),
        ?assertEqual(ok, pcall(Cl, P1, {global_unregister, vr_two})),
        ?assertEqual([undefined, undefined, undefined], whereis_all(Cl, vr_two)),
        ?assertEqual(undefined, c_whereis(Cl, vr_two)),
        yes = c_register(Cl, P1, vr_three),
        ?assertEqual(yes, pcall(Cl, P2, {global_re_register, vr_three})),
        ?assertEqual([P2, P2, P2], whereis_all(Cl, vr_three)),
        ?assertEqual(P2, c_whereis(Cl, vr_three))
    end).

clash_c_first(_Ctx, #{peers := [_, B, _]} = Cl) ->
    P1 = probe(Cl),
    without_rex(Cl, fun() -> yes = c_register(Cl, P1, vr_clash1) end),
    Pid = sleeper(B),
    ?assertEqual(no, cnode_bridge_test:call(B, global, register_name, [vr_clash1, Pid], 60000)),
    ?assertEqual([P1, P1, P1], whereis_all(Cl, vr_clash1)),
    ?assertEqual(P1, c_whereis(Cl, vr_clash1)).

clash_erlang_first(_Ctx, #{cnode := CN, peers := [A, B, _]} = Cl) ->
    Pid = sleeper(B),
    yes = cnode_bridge_test:call(B, global, register_name, [vr_clash2, Pid], 60000),
    P1 = probe(Cl),
    without_rex(Cl, fun() ->
        ?assertEqual(no, c_register(Cl, P1, vr_clash2)),
        D = lists:last(maps:get(peers, Cl)),
        Owner = sleeper(D),
        yes = cnode_bridge_test:call(D, global, register_name, [{cache, vr_clash3}, Owner], 60000),
        %% cache_sup says who holds it.
        ?assertEqual({error, {already_started, Owner}},
                     cnode_bridge_test:call(A, gen_server, call,
                                            [{cache_sup, CN}, {start, vr_clash3, x}, 30000]))
    end),
    ?assertEqual([Pid, Pid, Pid], whereis_all(Cl, vr_clash2)),
    ?assertEqual(Pid, c_whereis(Cl, vr_clash2)).

%% The same name from C and from an Erlang node at the same moment, many
%% times: exactly one yes, and every table (the C node's too) names the winner.
races_have_one_winner(_Ctx, #{peers := [_, B, _]} = Cl) ->
    Rounds = 25,
    Probes = [probe(Cl) || _ <- lists:seq(1, Rounds)],
    Me = self(),
    lists:foreach(
      fun({I, P}) ->
              Name = {vr_race, I},
              Pid = sleeper(B),
              Go = fun(F) -> spawn_link(fun() -> Me ! {self(), F()} end) end,
              CR = Go(fun() -> c_register(Cl, P, Name) end),
              ER = Go(fun() -> cnode_bridge_test:call(B, global, register_name, [Name, Pid], 60000)
                      end),
              C = receive {CR, R1} -> R1 end,
              E = receive {ER, R2} -> R2 end,
              Winner = case {C, E} of
                           {yes, no} -> P;
                           {no, yes} -> Pid;
                           Other -> erlang:error({not_one_winner, I, Other})
                       end,
              ?assertEqual([Winner, Winner, Winner], whereis_all(Cl, Name)),
              ?assertEqual(Winner, c_whereis(Cl, Name))
      end, lists:zip(lists:seq(1, Rounds), Probes)).

%% An Erlang process holding global's own lock ({global, _}) on every node:
%% the C registration waits (and is seen nowhere) until it is released.
erlang_lock_blocks_until_released(_Ctx, #{peers := [A | _]} = Cl) ->
    Holder = hold_global_lock(A, all),
    P1 = probe(Cl),
    Me = self(),
    spawn_link(fun() -> Me ! {reg, pcall(Cl, P1, {global_register, vr_locked, random_exit, 60000})} end),
    timer:sleep(1500),
    ?assertEqual([undefined, undefined, undefined], whereis_all(Cl, vr_locked)),
    receive {reg, Early} -> erlang:error({registered_under_a_lock, Early}) after 0 -> ok end,
    release(A, Holder),
    ?assertEqual(yes, receive {reg, R} -> R after 30000 -> timeout end),
    ?assertEqual([P1, P1, P1], whereis_all(Cl, vr_locked)).

%% A registration that times out while an Erlang process holds the lock on
%% one node (not the boss, so C takes the boss's and others and must give
%% them back): afterwards no node holds a lock of C's.
timed_out_registration_leaves_no_lock(_Ctx, #{cnode := CN, nodes := Ns, peers := Ps} = Cl) ->
    %% The boss is the greatest node name; hold the lock on the least one.
    {Least, _} = hd(lists:keysort(2, Ns)),
    Holder = hold_global_lock(Least, self_only),
    P1 = probe(Cl),
    ?assertEqual(timeout, pcall(Cl, P1, {global_register, vr_timeout, random_exit, 1500})),
    HolderReq = {global, Holder},
    %% C sends its del_locks without waiting for their replies: poll.
    NoneOfC = fun() ->
                      lists:all(fun(P) ->
                                        L = cnode_bridge_test:call(P, ets, lookup, [global_locks, global]),
                                        L =:= [] orelse element(2, hd(L)) =:= element(2, HolderReq)
                                end, Ps)
              end,
    ?assert(cnode_bridge_test:wait_until(NoneOfC, 5000)),
    %% C's own table: another requester gets global's lock there at once.
    ?assertEqual(true, cnode_bridge_test:call(hd(Ps -- [Least]), global, set_lock,
                                              [{global, probe_req}, [CN], 0], 10000)),
    true = cnode_bridge_test:call(hd(Ps -- [Least]), global, del_lock,
                                  [{global, probe_req}, [CN]], 10000),
    release(Least, Holder),
    ?assertEqual([undefined, undefined, undefined], whereis_all(Cl, vr_timeout)),
    %% And the next registration goes through.
    ?assertEqual(yes, c_register(Cl, P1, vr_timeout)),
    ?assertEqual([P1, P1, P1], whereis_all(Cl, vr_timeout)).

kill9_removes_names_everywhere(Ctx, #{cnode := CN, handle := H, peers := [A | _]} = Cl) ->
    P1 = probe(Cl),
    without_rex(Cl, fun() -> yes = c_register(Cl, P1, vr_kill) end),
    {ok, W} = cnode_bridge_test:call(A, gen_server, call,
                                     [{cache_sup, CN}, {start, vr_kill, x}, 30000]),
    [P1, P1, P1] = whereis_all(Cl, vr_kill),
    [W, W, W] = whereis_all(Cl, {cache, vr_kill}),
    {ok, _} = cnode_bridge_test:kill_cnode(Ctx, H),
    ?assert(cnode_bridge_test:wait_until(
              fun() -> whereis_all(Cl, vr_kill) =:= [undefined, undefined, undefined] andalso
                           whereis_all(Cl, {cache, vr_kill}) =:= [undefined, undefined, undefined]
              end, 20000)).

%% Garbage sent to the registrar's pid (caught from the wire: its set_lock to
%% b's global_name_server) is dropped; monitors and exit signals to it change
%% nothing; registrations still work.
hostile_messages_to_the_registrar(_Ctx, #{cnode := CN, peers := [A, B, _]} = Cl) ->
    P1 = probe(Cl),
    Reg = catch_registrar(B, CN, fun() -> yes = c_register(Cl, P1, vr_h1) end),
    ?assertEqual(CN, node(Reg)),
    Bad = [garbage, {}, {a, b, c}, {make_ref(), true}, {make_ref(), false}, {notaref, yes},
           {greg_sleep, 1}, {greg_sleep, notint}, greg_kick, lists:seq(1, 1000),
           {'$gen_call', {self, t}, x}, {'$gen_cast', x}, <<"bin">>],
    Send = fun() ->
                   [Reg ! (fun F(self) -> self(); F(T) when is_tuple(T) ->
                                   list_to_tuple([F(E) || E <- tuple_to_list(T)]);
                               F(T) -> T end)(M) || M <- Bad],
                   Ref = erlang:monitor(process, Reg),
                   exit(Reg, kill),
                   exit(Reg, garbage),
                   %% Alive: no DOWN (a DOWN would free every lock it holds).
                   receive {'DOWN', Ref, _, _, Why} -> {down, Why} after 500 -> alive end
           end,
    ?assertEqual(alive, cnode_bridge_test:call(B, erlang, apply, [Send, []])),
    P2 = probe(Cl),
    without_rex(Cl, fun() -> ?assertEqual(yes, c_register(Cl, P2, vr_h2)) end),
    ?assertEqual([P2, P2, P2], whereis_all(Cl, vr_h2)),
    ?assertEqual(hi, cnode_bridge_test:call(A, gen_server, call, [{echo, CN}, hi, 10000])).

%% A known node that went down is no longer waited for: a registration after
%% it left goes through on the nodes left. From the I/O thread (an inline
%% probe's call) a registration is refused at once (CNB_ESTATE), not hung.
node_gone_and_io_thread(Ctx, #{nodes := [_, _, {DPeer, _}], peers := [A, B, _]} = Cl) ->
    ok = cnode_bridge_test:stop_node(Ctx, DPeer),
    P1 = probe(Cl),
    Two = Cl#{peers := [A, B]},
    ?assertEqual(yes, c_register(Two, P1, vr_after_down)),
    ?assertEqual([P1, P1], whereis_all(Two, vr_after_down)),
    {ok, I} = pcall(Cl, {probe, maps:get(cnode, Cl)}, spawn_inline),
    ?assertEqual(no, c_register(Two, I, vr_inline)),
    ?assertEqual([undefined, undefined], whereis_all(Two, vr_inline)).

%% A node dies while one of its processes holds global's lock on every node,
%% the C node's table among them (the holder's multi_call done, its del_lock
%% never sent): C's registration waits on it, then goes through once the
%% nodedown has dropped the dead node's locks everywhere, C's own table too
%% (an Erlang node's set_lock on C is granted at once afterwards).
lock_holder_node_dies(_Ctx, #{cnode := CN, peers := [A, B, D]} = Cl) ->
    _Holder = hold_global_lock(B, all),
    P1 = probe(Cl),
    Me = self(),
    spawn_link(fun() -> Me ! {reg, pcall(Cl, P1, {global_register, vr_orphan, random_exit, 45000})} end),
    timer:sleep(1500),
    receive {reg, Early} -> erlang:error({registered_under_a_lock, Early}) after 0 -> ok end,
    %% The node halts at once: no del_lock, no exit of the holder first (the
    %% peer call may end with the node before its answer).
    _ = catch cnode_bridge_test:call(B, erlang, spawn, [erlang, halt, [0]]),
    ?assertEqual(yes, receive {reg, R} -> R after 60000 -> timeout end),
    Two = Cl#{peers := [A, D]},
    ?assertEqual([P1, P1], whereis_all(Two, vr_orphan)),
    ?assertEqual(true, cnode_bridge_test:call(D, global, set_lock,
                                              [{global, after_halt}, [CN], 0], 10000)),
    true = cnode_bridge_test:call(D, global, del_lock, [{global, after_halt}, [CN]], 10000).

%%% ------------------------------------------------------------------ helpers

%% A process on node P that takes global's lock {global, Self} on every node
%% (all) or on P alone (self_only), and holds it until release/2.
hold_global_lock(P, Where) ->
    cnode_bridge_test:call(
      P, erlang, apply,
      [fun() ->
               Me = self(),
               H = spawn(fun() ->
                                 Nodes = case Where of all -> [node() | nodes()]; self_only -> [node()] end,
                                 true = global:set_lock({global, self()}, Nodes),
                                 Me ! {locked, self()},
                                 receive release -> global:del_lock({global, self()}, Nodes) end,
                                 Me ! released,
                                 receive stop -> ok end
                         end),
               receive {locked, H} -> H end
       end, []], 60000).

release(P, H) ->
    cnode_bridge_test:call(P, erlang, apply,
                           [fun() -> H ! release, ok end, []]),
    timer:sleep(100).

%% The pid of C's registrar: traced on node P as the sender of the set_lock
%% its global_name_server gets from CN while Do runs (the tracer, registered
%% there as vr_tracer, keeps it; this VM is not distributed).
catch_registrar(P, CN, Do) ->
    ok = cnode_bridge_test:call(
           P, erlang, apply,
           [fun() ->
                    T = spawn(fun() -> register(vr_tracer, self()), tracer(CN) end),
                    1 = erlang:trace(whereis(global_name_server), true, ['receive', {tracer, T}]),
                    ok
            end, []]),
    Do(),
    cnode_bridge_test:call(P, erlang, apply,
                           [fun() -> vr_tracer ! {get, self()},
                                     receive {registrar, R} -> R after 10000 -> none end
                            end, []], 20000).

tracer(CN) ->
    receive
        {trace, Gns, 'receive', {'$gen_call', {R, _}, {set_lock, {global, R}}}}
          when node(R) =:= CN ->
            erlang:trace(Gns, false, ['receive']),
            receive {get, From} -> From ! {registrar, R} end;
        _ ->
            tracer(CN)
    end.

%% Issue 20's safety rule: a visible C node that stops answering (SIGSTOP,
%% mid-cluster) holds up a :global registration elsewhere no longer than a
%% stopped Erlang node does, measured in the same cluster (net_ticktime 4:
%% both waits end when the silent node is dropped and global goes on
%% without it; here 15-25 s each). After SIGCONT the C node comes back (it
%% reconnects to its anchor), syncs, and its own table names what was
%% registered meanwhile.
stalled_c_node(Ctx) ->
    Tick = ["-kernel", "net_ticktime", "4", "-connect_all", "true"],
    [{A, NA}, {B, NB}, {D, ND}] =
        [begin {ok, P, N} = cnode_bridge_test:start_node(Ctx, #{name => Nm, args => Tick}), {P, N} end
         || Nm <- ["sa", "sb", "sd"]],
    pong = cnode_bridge_test:call(A, net_adm, ping, [NB]),
    pong = cnode_bridge_test:call(A, net_adm, ping, [ND]),
    {ok, H, CN} = cnode_bridge_test:start_cnode(
                    Ctx, #{connect => [NA], args => ["--demo", "--visible", "--ticktime", "4"]}),
    Peers = [A, B, D],
    Synced = fun(Ps) ->
                     lists:all(fun(P) -> lists:member(CN, cnode_bridge_test:call(P, erlang, nodes, [])) end, Ps)
             end,
    true = cnode_bridge_test:wait_until(fun() -> Synced(Peers) end, 30000),
    [ok = cnode_bridge_test:call(P, global, sync, [], 60000) || P <- Peers],
    %% Registers Name from A for a process of B: {Pid, milliseconds taken}.
    Reg = fun(Name) ->
                  Pid = sleeper(B),
                  T0 = erlang:monotonic_time(millisecond),
                  yes = cnode_bridge_test:call(A, global, register_name, [Name, Pid], 120000),
                  {Pid, erlang:monotonic_time(millisecond) - T0}
          end,
    Stopped = fun(OsPid, F) ->
                      "" = os:cmd("kill -STOP " ++ integer_to_list(OsPid)),
                      try F() after os:cmd("kill -CONT " ++ integer_to_list(OsPid)) end
              end,
    {Pid, Tc} = Stopped(cnode_bridge_test:cnode_os_pid(Ctx, H), fun() -> Reg(vr_stalled) end),
    ?assertEqual([Pid, Pid], [cnode_bridge_test:call(P, global, whereis_name, [vr_stalled]) || P <- [A, B]]),
    ?assert(cnode_bridge_test:wait_until(
              fun() -> Synced([A, B]) andalso
                           pcall(#{peers => Peers}, {probe, CN}, {global_whereis, vr_stalled}) =:= Pid
              end, 60000)),
    DPid = list_to_integer(cnode_bridge_test:call(D, os, getpid, [])),
    {_, Te} = Stopped(DPid, fun() -> Reg(vr_stalled_erl) end),
    io:format(user, "~p: a registration waited ~b ms on a stopped C node, ~b ms on a stopped Erlang node~n",
              [?MODULE, Tc, Te]),
    ?assert(Tc =< Te + 5000).
