%% Integration tests of inline workers (issue 19, cnb_spawn_opts_t.run_inline):
%% a worker the I/O thread runs itself when a signal reaches it idle. Each test
%% first checks that the worker's callbacks do run on the I/O thread (the
%% probe's on_io_thread request), then that calls, casts, messages, links,
%% monitors and exits behave as with a pooled worker: each sender's order,
%% every call's own reply, terminate before the DOWN and EXIT of its end; and
%% that a call that would wait for a reply from the I/O thread itself
%% (cnb_call, cnb_rpc from an inline callback) fails with bad_state at once
%% while the node goes on serving. Real nodes and the real cnode program
%% (--demo: echo, inline, and probe workers).
-module(inline_tests).
-include_lib("eunit/include/eunit.hrl").

%% Run on the peer node.
-export([traffic/3, sender/4, lifecycle/1, refused/1]).

-define(T(Name, Secs), {atom_to_list(Name), {timeout, Secs, fun() -> cnb_cluster:with(fun Name/1) end}}).

inline_test_() ->
    [?T(runs_on_io_thread, 120),
     ?T(order_and_replies_kept, 180),
     ?T(links_monitors_exits, 120),
     ?T(blocking_call_refused, 120)].

-define(SENDERS, 4).
-define(MSGS, 2000).     % per sender
-define(CALLERS, 4).
-define(CALLS, 300).     % per caller

start(C) ->
    {ok, A, NA} = cnb_cluster:start_node(C, #{name => "a"}),
    {ok, Port, CN} = cnb_cluster:start_cnode(
                       C, ["--cookie", cnb_cluster:cookie(C), "--sname",
                           cnb_cluster:unique_name("c"), "--demo", "--connect",
                           atom_to_list(NA)]),
    {A, Port, CN}.

%% echo and a probe spawned inline answer from the I/O thread; a pooled
%% probe from a pool thread.
runs_on_io_thread(C) ->
    {A, _Port, CN} = start(C),
    {ok, In} = cnb_cluster:call(A, gen_server, call, [{probe, CN}, spawn_inline]),
    {ok, Pooled} = cnb_cluster:call(A, gen_server, call, [{probe, CN}, spawn]),
    ?assertEqual(true, cnb_cluster:call(A, gen_server, call, [In, on_io_thread])),
    ?assertEqual(false, cnb_cluster:call(A, gen_server, call, [Pooled, on_io_thread])),
    %% echo (inline in the demo) replies as ever.
    ?assertEqual({x, 1}, cnb_cluster:call(A, gen_server, call, [{echo, CN}, {x, 1}])).

%% SENDERS processes send MSGS messages and casts to an inline probe that
%% forwards them to a collector, with a call to it every 50; CALLERS call
%% echo meanwhile. Each sender's messages arrive in order, every call gets
%% its own reply.
order_and_replies_kept(C) ->
    {A, _Port, CN} = start(C),
    ?assertEqual(ok, cnb_cluster:call(A, ?MODULE, traffic, [CN, ?SENDERS, ?MSGS], 150000)).

traffic(CN, Senders, Msgs) ->
    Self = self(),
    {ok, P} = gen_server:call({probe, CN}, spawn_inline),
    true = gen_server:call(P, on_io_thread),
    ok = gen_server:call(P, {subscribe, Self}),
    Ss = [spawn_link(?MODULE, sender, [Self, P, K, Msgs]) || K <- lists:seq(1, Senders)],
    cnb_traffic:check(CN, Ss, Msgs, {?CALLERS, ?CALLS, 5000},
                      fun({'$gen_cast', M}) -> M; (M) -> M end).

%% Odd numbers as messages, even ones as casts (handed to handle_info by a
%% worker without handle_cast, as the forwarded {'$gen_cast', _}).
sender(Parent, P, K, Msgs) ->
    lists:foreach(fun(I) when I rem 2 =:= 0 -> gen_server:cast(P, {m, K, I});
                     (I) ->
                          P ! {m, K, I},
                          I rem 50 =:= 1 andalso (ok = gen_server:call(P, {trap_exit, false}))
                  end, lists:seq(1, Msgs)),
    Parent ! {sent, self()}.

%% Links, monitors and exits, both ways, with an inline probe.
links_monitors_exits(C) ->
    {A, _Port, CN} = start(C),
    ?assertEqual(ok, cnb_cluster:call(A, ?MODULE, lifecycle, [CN], 60000)).

lifecycle(CN) ->
    Self = self(),
    process_flag(trap_exit, true),
    New = fun() ->
                  {ok, P} = gen_server:call({probe, CN}, spawn_inline),
                  true = gen_server:call(P, on_io_thread),
                  ok = gen_server:call(P, {subscribe, Self}),
                  ok = gen_server:call(P, {notify_terminate, Self}),
                  P
          end,
    %% Its stop: terminate, then DOWN and EXIT (from the same sender: in order).
    P1 = New(),
    M1 = monitor(process, P1),
    true = link(P1),
    ok = gen_server:call(P1, {stop, bye}),
    {probe_terminate, P1, bye} = rcv(),
    [{'EXIT', P1, bye}, {'DOWN', M1, process, P1, bye}] = lists:sort([rcv(), rcv()]),
    %% An exit signal through a link ends it (not trapping), and exit/2 kill.
    P2 = New(),
    M2 = monitor(process, P2),
    Linked = spawn(fun() -> receive go -> exit(boom) end end),
    ok = gen_server:call(P2, {link, Linked}),
    Linked ! go,
    {probe_terminate, P2, boom} = rcv(),
    {'DOWN', M2, process, P2, boom} = rcv(),
    P3 = New(),
    M3 = monitor(process, P3),
    exit(P3, kill),
    {'DOWN', M3, process, P3, killed} = case rcv() of
                                            {probe_terminate, P3, killed} -> rcv();
                                            Other -> Other
                                        end,
    %% Trapping: the EXIT and a DOWN of its own monitor arrive as messages.
    P4 = New(),
    ok = gen_server:call(P4, {trap_exit, true}),
    L4 = spawn(fun() -> receive go -> exit(linked_gone) end end),
    W4 = spawn(fun() -> receive go -> exit(watched_gone) end end),
    ok = gen_server:call(P4, {link, L4}),
    {ok, R4} = gen_server:call(P4, {monitor, W4}),
    L4 ! go,
    {probe_info, P4, {'EXIT', L4, linked_gone}} = rcv(),
    W4 ! go,
    {probe_info, P4, {'DOWN', R4, process, W4, watched_gone}} = rcv(),
    %% A monitor on a gone inline worker: noproc.
    M5 = monitor(process, P1),
    {'DOWN', M5, process, P1, noproc} = rcv(),
    %% A call to one that ends in it: the caller gets the exit.
    {'EXIT', {{callback_failed, _, _}, _}} = catch gen_server:call(P4, crash),
    {probe_terminate, P4, {callback_failed, _, _}} = rcv(),
    ok.

rcv() ->
    receive M -> M after 20000 -> timeout end.

%% cnb_call and cnb_rpc from an inline probe's callback: bad_state at once
%% (without the refusal they would hold the I/O thread until their timeout and
%% fail with timeout); the same from a pooled probe works; the node goes on.
blocking_call_refused(C) ->
    {A, _Port, CN} = start(C),
    ?assertEqual(ok, cnb_cluster:call(A, ?MODULE, refused, [CN], 60000)).

refused(CN) ->
    {ok, In} = gen_server:call({probe, CN}, spawn_inline),
    {ok, Pooled} = gen_server:call({probe, CN}, spawn),
    true = gen_server:call(In, on_io_thread),
    {error, bad_state, undefined} = gen_server:call(In, {call, echo, CN, hello, 3000}),
    {error, bad_state, undefined} = gen_server:call(In, {call, Pooled, on_io_thread, 3000}),
    {error, bad_state, _} = gen_server:call(In, {rpc, node(), erlang, node, [], 3000}),
    {ok, hello} = gen_server:call(Pooled, {call, echo, CN, hello, 3000}),
    {ok, true} = gen_server:call(Pooled, {call, In, on_io_thread, 3000}),
    hello = gen_server:call({echo, CN}, hello),
    true = gen_server:call(In, on_io_thread),
    ok.
