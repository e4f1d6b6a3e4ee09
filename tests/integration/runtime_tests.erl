%% Integration tests of the process runtime (issue 4) with real OTP nodes and
%% the real cnode program (--demo workers echo, cache_sup, probe): calls from
%% many nodes, links, monitors and exits in both directions (noproc,
%% noconnection, kill, trap_exit, unlink), late replies, calls and RPC from C,
%% sys messages, clean shutdown, 10,000 workers under AddressSanitizer.
-module(runtime_tests).
-include_lib("eunit/include/eunit.hrl").

%% Run on the peer nodes.
-export([loop/0, trap/0, collect/1, flush/0, many_calls/3, start_many/3, run_in/2]).

-define(T(Name, Secs), {atom_to_list(Name), {timeout, Secs, fun() -> with_cluster(fun Name/1) end}}).

runtime_test_() ->
    [?T(echo_and_cache, 60),
     ?T(calls_from_many_nodes, 120),
     ?T(links_from_erlang, 60),
     ?T(exit_signals, 60),
     ?T(monitors_from_erlang, 60),
     ?T(c_links_and_monitors, 60),
     ?T(noconnection_both_ways, 60),
     ?T(late_replies_dropped, 60),
     ?T(c_calls_erlang_and_rpc, 60),
     ?T(sys_messages, 60),
     ?T(shutdown_fires_with_shutdown, 60),
     ?T(ten_thousand_workers, 300)].

with_cluster(F) -> cnb_cluster:with(F).

start_c(C) -> start_c(C, []).

start_c(C, Extra) ->
    {ok, Port, Node} = cnb_cluster:start_cnode(
                         C, ["--cookie", cnb_cluster:cookie(C), "--sname",
                             cnb_cluster:unique_name("c"), "--demo" | Extra]),
    {Port, Node}.

node_a(C) ->
    {ok, A, NA} = cnb_cluster:start_node(C, #{name => "a"}),
    {A, NA}.

call(A, M, F, Args) -> cnb_cluster:call(A, M, F, Args).

%% gen_server:call on the peer.
gcall(A, Dest, Req) -> call(A, gen_server, call, [Dest, Req, 10000]).

%% Evaluates Fun on the peer inside a process that stays alive (peer:call runs
%% each call in a fresh process), returning what it returns.
on(A, Fun) -> call(A, erlang, apply, [Fun, []]).

new_cache(A, CN, Id, Content) ->
    {ok, Pid} = gcall(A, {cache_sup, CN}, {start, Id, Content}),
    Pid.

%%% --------------------------------------------------------------- peer helpers

%% A process on the peer that runs funs sent to it and keeps its mailbox:
%% {run, From, Fun} -> From ! {ran, Result}.
loop() ->
    receive
        {run, From, Fun} -> From ! {ran, self(), Fun()}, loop();
        stop -> ok
    end.

%% A trapping helper process; returns its pid.
trap() ->
    spawn(fun() -> process_flag(trap_exit, true), loop() end).

%% Waits for one message matching any term, up to Ms.
collect(Ms) ->
    receive M -> M after Ms -> timeout end.

flush() ->
    receive _ -> flush() after 0 -> ok end.

run(A, Helper, Fun) ->
    call(A, ?MODULE, run_in, [Helper, Fun]).

%% On the peer: has Helper run Fun and returns the result.
run_in(Helper, Fun) ->
    Helper ! {run, self(), Fun},
    receive {ran, Helper, R} -> R after 20000 -> error(helper_timeout) end.

%% Spawned on the peer: N calls by P processes, results checked there.
many_calls(CN, Procs, N) ->
    Self = self(),
    Pids = [spawn_link(fun() ->
                               Ok = lists:all(
                                      fun(I) ->
                                              Id = {self(), I},
                                              {ok, W} = gen_server:call({cache_sup, CN},
                                                                        {start, Id, {content, I}}),
                                              {ok, {content, I}} = gen_server:call(W, get),
                                              X = {echo, I, self()},
                                              X = gen_server:call({echo, CN}, X),
                                              ok = gen_server:call(W, stop),
                                              true
                                      end, lists:seq(1, N)),
                               Self ! {done, self(), Ok}
                       end) || _ <- lists:seq(1, Procs)],
    [receive {done, P, R} -> R after 60000 -> timeout end || P <- Pids].

start_many(CN, From, To) ->
    [begin {ok, P} = gen_server:call({cache_sup, CN}, {start, I, I}), P end
     || I <- lists:seq(From, To)].

%%% --------------------------------------------------------------- tests

echo_and_cache(C) ->
    {A, _} = node_a(C),
    {_Port, CN} = start_c(C),
    ?assertEqual({hello, [1, 2]}, gcall(A, {echo, CN}, {hello, [1, 2]})),
    ?assertEqual([], gcall(A, {echo, CN}, {lookup, some_key})),
    {pong, Echo} = on(A, fun() -> {echo, CN} ! {ping, self()}, receive M -> M after 5000 -> timeout end end),
    ?assertEqual(CN, node(Echo)),
    W = new_cache(A, CN, 42, <<"content">>),
    ?assertEqual({ok, <<"content">>}, gcall(A, W, get)),
    ?assertEqual(ok, gcall(A, W, stop)),
    %% noproc, or normal while the stopped worker is still ending (as with
    %% an Erlang gen_server whose stop reply went out before it ended).
    ?assertMatch({'EXIT', {StopWhy, _}} when StopWhy =:= noproc; StopWhy =:= normal,
                 catch gcall(A, W, get)),
    %% TTL: the worker ends by itself, normally (long enough for the
    %% monitor below to come first: the timer runs from the worker's start).
    {ok, T} = gcall(A, {cache_sup, CN}, {start, 43, x, 1500}),
    ?assertEqual(normal, on(A, fun() ->
                                      R = erlang:monitor(process, T),
                                      receive {'DOWN', R, process, _, Why} -> Why
                                      after 5000 -> timeout end
                              end)),
    ?assertMatch({error, badarg}, gcall(A, {cache_sup, CN}, nonsense)).

calls_from_many_nodes(C) ->
    Peers = [begin {ok, P, _} = cnb_cluster:start_node(C, #{name => "m"}), P end
             || _ <- lists:seq(1, 3)],
    {_Port, CN} = start_c(C, ["--threads", "2"]),
    Self = self(),
    [spawn_link(fun() -> Self ! {res, call(P, ?MODULE, many_calls, [CN, 10, 30])} end)
     || P <- Peers],
    Results = [receive {res, R} -> R after 120000 -> timeout end || _ <- Peers],
    ?assertEqual(lists:duplicate(3, lists:duplicate(10, true)), Results).

links_from_erlang(C) ->
    {A, _} = node_a(C),
    {_Port, CN} = start_c(C),
    H = call(A, ?MODULE, trap, []),
    %% Normal stop: the linked process gets {'EXIT', W, normal}.
    W1 = new_cache(A, CN, 1, x),
    true = run(A, H, fun() -> link(W1) end),
    ok = gcall(A, W1, stop),
    ?assertEqual({'EXIT', W1, normal}, run(A, H, fun() -> collect(5000) end)),
    %% A crash (a callback error): the reason reaches the link and the caller.
    W2 = new_cache(A, CN, 2, x),
    true = run(A, H, fun() -> link(W2) end),
    Crash = {callback_failed, handle_call, einval}, % CNB_EINVAL, as its atom
    ?assertMatch({'EXIT', {Crash, _}}, catch gcall(A, W2, crash)),
    ?assertEqual({'EXIT', W2, Crash}, run(A, H, fun() -> collect(5000) end)),
    %% unlink/1: no signal afterwards.
    W3 = new_cache(A, CN, 3, x),
    true = run(A, H, fun() -> link(W3), unlink(W3) end),
    ok = gcall(A, W3, stop),
    ?assertEqual(timeout, run(A, H, fun() -> collect(500) end)),
    %% Linking to a dead C pid: EXIT noproc.
    ?assertEqual({'EXIT', W3, noproc}, run(A, H, fun() -> link(W3), collect(5000) end)).

exit_signals(C) ->
    {A, _} = node_a(C),
    {_Port, CN} = start_c(C),
    %% The DOWN's reason, or alive when none came in Ms.
    DownIn = fun(P, Do, Ms) -> on(A, fun() ->
                                           R = erlang:monitor(process, P),
                                           Do(),
                                           receive {'DOWN', R, process, P, Why} -> Why
                                           after Ms -> alive end
                                   end) end,
    Down = fun(P, Do) -> DownIn(P, Do, 5000) end,
    W1 = new_cache(A, CN, 1, x),
    ?assertEqual(killed, Down(W1, fun() -> exit(W1, kill) end)),
    W2 = new_cache(A, CN, 2, x),
    ?assertEqual(alive, DownIn(W2, fun() -> exit(W2, normal), timer:sleep(300) end, 1500)),
    ?assertEqual({ok, x}, gcall(A, W2, get)),
    ?assertEqual(foo, Down(W2, fun() -> exit(W2, foo) end)),
    %% A trapping probe gets exit/2 as a message; kill still kills it.
    {ok, P} = gcall(A, {probe, CN}, spawn),
    H = call(A, ?MODULE, trap, []),
    ok = gcall(A, P, {subscribe, H}),
    ok = gcall(A, P, {trap_exit, true}),
    Me = run(A, H, fun() -> exit(P, foo), self() end),
    ?assertEqual({probe_info, P, {'EXIT', Me, foo}}, run(A, H, fun() -> collect(5000) end)),
    ?assertEqual(killed, Down(P, fun() -> exit(P, kill) end)).

monitors_from_erlang(C) ->
    {A, _} = node_a(C),
    {Port, CN} = start_c(C),
    W = new_cache(A, CN, 1, x),
    ?assertEqual(normal, on(A, fun() ->
                                      R = erlang:monitor(process, W),
                                      ok = gen_server:call(W, stop),
                                      receive {'DOWN', R, process, W, Why} -> Why
                                      after 5000 -> timeout end
                              end)),
    %% A monitor on a dead pid or an unknown name: DOWN noproc at once.
    ?assertEqual(noproc, on(A, fun() ->
                                      R = erlang:monitor(process, W),
                                      receive {'DOWN', R, _, _, Why} -> Why after 5000 -> timeout end
                              end)),
    ?assertEqual({noproc, {nosuch, CN}},
                 on(A, fun() ->
                              R = erlang:monitor(process, {nosuch, CN}),
                              receive {'DOWN', R, process, Obj, Why} -> {Why, Obj}
                              after 5000 -> timeout end
                      end)),
    %% demonitor: nothing after the worker stops.
    W2 = new_cache(A, CN, 2, x),
    ?assertEqual(none, on(A, fun() ->
                                    R = erlang:monitor(process, W2),
                                    true = erlang:demonitor(R),
                                    ok = gen_server:call(W2, stop),
                                    receive {'DOWN', R, _, _, _} -> got after 500 -> none end
                            end)),
    %% By name, then the C node shuts down: DOWN shutdown (not noconnection).
    H = call(A, ?MODULE, trap, []),
    Ref = run(A, H, fun() -> erlang:monitor(process, {echo, CN}) end),
    {ok, 0} = cnb_cluster:stop_cnode(C, Port),
    ?assertEqual({'DOWN', Ref, process, {echo, CN}, shutdown},
                 run(A, H, fun() -> collect(5000) end)).

c_links_and_monitors(C) ->
    {A, NA} = node_a(C),
    {_Port, CN} = start_c(C),
    H = call(A, ?MODULE, trap, []),
    {ok, P} = gcall(A, {probe, CN}, spawn),
    ok = gcall(A, P, {subscribe, H}),
    ok = gcall(A, P, {trap_exit, true}),
    %% The C worker links to an Erlang process, which exits.
    E1 = call(A, erlang, spawn, [?MODULE, loop, []]),
    ok = gcall(A, P, {link, E1}),
    timer:sleep(100),
    call(A, erlang, exit, [E1, boom]),
    ?assertEqual({probe_info, P, {'EXIT', E1, boom}}, run(A, H, fun() -> collect(5000) end)),
    %% It monitors one by pid and one by name.
    E2 = call(A, erlang, spawn, [?MODULE, loop, []]),
    {ok, R2} = gcall(A, P, {monitor, E2}),
    call(A, erlang, exit, [E2, bang]),
    ?assertEqual({probe_info, P, {'DOWN', R2, process, E2, bang}},
                 run(A, H, fun() -> collect(5000) end)),
    E3 = call(A, erlang, spawn, [?MODULE, loop, []]),
    true = call(A, erlang, register, [rt_named, E3]),
    {ok, R3} = gcall(A, P, {monitor, rt_named, NA}),
    timer:sleep(100),
    call(A, erlang, exit, [E3, bye]),
    ?assertEqual({probe_info, P, {'DOWN', R3, process, {rt_named, NA}, bye}},
                 run(A, H, fun() -> collect(5000) end)),
    %% Monitors and links to what does not exist: noproc.
    {ok, R4} = gcall(A, P, {monitor, E3}),
    ?assertEqual({probe_info, P, {'DOWN', R4, process, E3, noproc}},
                 run(A, H, fun() -> collect(5000) end)),
    ok = gcall(A, P, {link, E3}),
    ?assertEqual({probe_info, P, {'EXIT', E3, noproc}}, run(A, H, fun() -> collect(5000) end)),
    %% unlink: the exit no longer arrives.
    E5 = call(A, erlang, spawn, [?MODULE, loop, []]),
    ok = gcall(A, P, {link, E5}),
    ok = gcall(A, P, {unlink, E5}),
    call(A, erlang, exit, [E5, boom]),
    ?assertEqual(timeout, run(A, H, fun() -> collect(500) end)),
    %% Not trapping: the linked worker dies with the Erlang process's reason.
    {ok, P2} = gcall(A, {probe, CN}, spawn),
    E6 = call(A, erlang, spawn, [?MODULE, loop, []]),
    ok = gcall(A, P2, {link, E6}),
    ?assertEqual(boom, on(A, fun() ->
                                    R = erlang:monitor(process, P2),
                                    exit(E6, boom),
                                    receive {'DOWN', R, _, _, Why} -> Why after 5000 -> timeout end
                            end)),
    %% And exit/2 from C reaches an Erlang process.
    E7 = call(A, erlang, spawn, [?MODULE, loop, []]),
    ?assertEqual(from_c, on(A, fun() ->
                                      R = erlang:monitor(process, E7),
                                      ok = gen_server:call(P, {exit, E7, from_c}),
                                      receive {'DOWN', R, _, _, Why} -> Why after 5000 -> timeout end
                              end)).

noconnection_both_ways(C) ->
    {A, _NA} = node_a(C),
    {ok, B, _} = cnb_cluster:start_node(C, #{name => "b"}),
    {_Port, CN} = start_c(C),
    HB = call(B, ?MODULE, trap, []),
    {ok, P} = gcall(B, {probe, CN}, spawn),
    ok = gcall(B, P, {subscribe, HB}),
    ok = gcall(B, P, {trap_exit, true}),
    EA = call(A, erlang, spawn, [?MODULE, loop, []]),
    EA2 = call(A, erlang, spawn, [?MODULE, loop, []]),
    ok = gcall(B, P, {link, EA}),
    {ok, Ref} = gcall(B, P, {monitor, EA2}),
    %% On A, a trapping process linked to a C worker.
    HA = call(A, ?MODULE, trap, []),
    W = new_cache(A, CN, 1, x),
    true = run(A, HA, fun() -> link(W) end),
    true = call(A, erlang, disconnect_node, [CN]),
    Got = lists:sort([run(B, HB, fun() -> collect(5000) end) || _ <- [1, 2]]),
    ?assertEqual(lists:sort([{probe_info, P, {'EXIT', EA, noconnection}},
                             {probe_info, P, {'DOWN', Ref, process, EA2, noconnection}}]), Got),
    ?assertEqual({'EXIT', W, noconnection}, run(A, HA, fun() -> collect(5000) end)),
    %% Calls from C to an unreachable node: noconnection.
    ?assertMatch({error, noconnection, _},
                 gcall(B, P, {call, nosuch, 'nobody@nohost', x, 2000})).

late_replies_dropped(C) ->
    {A, NA} = node_a(C),
    {_Port, CN} = start_c(C),
    %% Erlang -> C: a reply after the caller's timeout is never delivered.
    ?assertEqual(empty, on(A, fun() ->
                                     {'EXIT', {timeout, _}} =
                                         (catch gen_server:call({probe, CN}, {reply_after, 400, late}, 100)),
                                     timer:sleep(700),
                                     case process_info(self(), messages) of
                                         {messages, []} -> empty;
                                         {messages, Ms} -> Ms
                                     end
                             end)),
    %% C -> Erlang: the same, seen from the C side.
    {ok, _} = call(A, cnb_test_server, start, [rt_server]),
    H = call(A, ?MODULE, trap, []),
    {ok, P} = gcall(A, {probe, CN}, spawn),
    ok = gcall(A, P, {subscribe, H}),
    ?assertMatch({error, timeout, _}, gcall(A, P, {call, rt_server, NA, {sleep, 400, late}, 100})),
    timer:sleep(700),
    ?assertEqual(timeout, run(A, H, fun() -> collect(300) end)),
    ?assertEqual({ok, fine}, gcall(A, P, {call, rt_server, NA, {echo, fine}, 2000})).

c_calls_erlang_and_rpc(C) ->
    {A, NA} = node_a(C),
    {_Port, CN} = start_c(C),
    {ok, S} = call(A, cnb_test_server, start, [rt_server]),
    ?assertEqual({ok, hi}, gcall(A, {probe, CN}, {call, rt_server, NA, {echo, hi}, 2000})),
    ?assertEqual({ok, hi2}, gcall(A, {probe, CN}, {call, S, {echo, hi2}, 2000})),
    ?assertMatch({error, noproc, _}, gcall(A, {probe, CN}, {call, nobody, NA, x, 2000})),
    ?assertEqual({ok, NA}, gcall(A, {probe, CN}, {rpc, NA, erlang, node, [], 2000})),
    ?assertEqual({ok, 6}, gcall(A, {probe, CN}, {rpc, NA, lists, sum, [[1, 2, 3]], 2000})),
    ?assertMatch({ok, {badrpc, {'EXIT', {undef, _}}}},
                 gcall(A, {probe, CN}, {rpc, NA, no_such_module, f, [], 2000})),
    %% C worker calls another C worker (loopback through the node).
    ?assertEqual({ok, {x, 1}}, gcall(A, {probe, CN}, {call, echo, CN, {x, 1}, 2000})),
    %% Answered calls leave no monitor behind on the callee (as
    %% gen_server:call demonitors): none of the C node's pids still
    %% monitors rex or the server once the DEMONITORs are in.
    [?assertEqual({ok, hi}, gcall(A, {probe, CN}, {call, rt_server, NA, {echo, hi}, 2000}))
     || _ <- lists:seq(1, 20)],
    [?assertEqual({ok, NA}, gcall(A, {probe, CN}, {rpc, NA, erlang, node, [], 2000}))
     || _ <- lists:seq(1, 20)],
    CMonitors = fun(Name) ->
                        {monitored_by, By} =
                            call(A, erlang, process_info, [call(A, erlang, whereis, [Name]),
                                                           monitored_by]),
                        [P || P <- By, is_pid(P), node(P) =:= CN]
                end,
    _ = cnb_cluster:wait_until(fun() -> {CMonitors(rex), CMonitors(rt_server)} =:= {[], []} end,
                               5000),
    ?assertEqual({[], []}, {CMonitors(rex), CMonitors(rt_server)}).

sys_messages(C) ->
    {A, _} = node_a(C),
    {_Port, CN} = start_c(C),
    W = new_cache(A, CN, 1, <<"c">>),
    ?assertEqual({cache, <<"c">>}, call(A, sys, get_state, [W, 2000])),
    ?assertMatch({status, W, {module, _}, _}, call(A, sys, get_status, [W, 2000])),
    {ok, Echo} = {ok, call(A, erlang, apply, [fun() -> {echo, CN} ! {ping, self()},
                                                       receive {pong, E} -> E end end, []])},
    ?assertMatch({status, Echo, _, _}, call(A, sys, get_status, [{echo, CN}, 2000])),
    ?assertMatch({'EXIT', _}, catch call(A, sys, replace_state, [W, fun(S) -> S end, 2000])),
    ?assertEqual({ok, <<"c">>}, gcall(A, W, get)).

shutdown_fires_with_shutdown(C) ->
    {A, _} = node_a(C),
    {Port, CN} = start_c(C),
    H = call(A, ?MODULE, trap, []),
    W = new_cache(A, CN, 1, x),
    R = run(A, H, fun() -> link(W), erlang:monitor(process, {cache_sup, CN}) end),
    {ok, Status} = cnb_cluster:stop_cnode(C, Port),
    ?assertEqual(0, Status),
    Got = lists:sort([run(A, H, fun() -> collect(5000) end) || _ <- [1, 2]]),
    ?assertEqual(lists:sort([{'EXIT', W, shutdown},
                             {'DOWN', R, process, {cache_sup, CN}, shutdown}]), Got),
    Out = cnb_cluster:cnode_output(C, Port),
    ?assert(lists:any(fun(L) -> re:run(L, "stopping on signal 15") =/= nomatch end, Out)).

%% 10,000 workers started and stopped; with the AddressSanitizer build of the
%% cnode program (make test builds it) LeakSanitizer checks that all their
%% memory came back when the node exits.
ten_thousand_workers(C) ->
    Asan = filename:join([cnb_cluster:root(), "build-asan", "priv", "cnode"]),
    Exe = case filelib:is_regular(Asan) of
              true -> Asan;
              false -> filename:join([cnb_cluster:root(), "erlang_side", "priv", "cnode"])
          end,
    {A, _} = node_a(C),
    {ok, Port, CN} = cnb_cluster:start_cnode(
                       C, {["--cookie", cnb_cluster:cookie(C), "--sname",
                            cnb_cluster:unique_name("c"), "--demo"],
                           #{exe => Exe, env => [{"ASAN_OPTIONS", "detect_leaks=1:exitcode=23"}]}}),
    Pids = lists:append([cnb_cluster:call(A, ?MODULE, start_many, [CN, I, I + 999], 120000)
                         || I <- lists:seq(1, 10000, 1000)]),
    ?assertEqual(10000, length(lists:usort(Pids))),
    [ok = gcall(A, P, stop) || P <- Pids],
    %% The stop's reply goes out before the worker ends, so a call right after
    %% it may set its monitor while the worker is still ending (DOWN normal,
    %% as with an Erlang gen_server) or after (noproc).
    ?assertMatch({'EXIT', {LastWhy, _}} when LastWhy =:= noproc; LastWhy =:= normal,
                 catch gcall(A, lists:last(Pids), get)),
    {ok, Status} = cnb_cluster:stop_cnode(C, Port),
    Out = cnb_cluster:cnode_output(C, Port),
    Bad = [L || L <- Out, re:run(L, "Sanitizer|runtime error") =/= nomatch],
    ?assertEqual({0, []}, {Status, Bad}).
