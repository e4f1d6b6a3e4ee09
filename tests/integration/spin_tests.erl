%% Integration tests of the call and message path's spinning hand-offs (issue
%% 19: a pool thread out of work and the I/O thread awaiting a reply spin a
%% while before they sleep, and a hand-off to a spinning thread wakes
%% nobody): messages and calls from many senders at once keep each sender's
%% order and every call gets its own reply, with spinning on (several spin
%% times) and off; an idle node takes no CPU once the traffic stops; and
%% between one caller's back-to-back calls the C node's threads do not sleep
%% (the I/O thread spins for input after it read some).
%% Real nodes and the real cnode program (--demo: echo and probe workers).
-module(spin_tests).
-include_lib("eunit/include/eunit.hrl").

%% Run on the peer node.
-export([traffic/3, sender/4, calls/2]).

-define(T(Name, Secs), {atom_to_list(Name), {timeout, Secs, fun() -> cnb_cluster:with(fun Name/1) end}}).

spin_test_() ->
    [?T(order_kept_spin_default, 180),
     ?T(order_kept_spin_long, 180),
     ?T(order_kept_spin_off, 180),
     ?T(idle_node_takes_no_cpu, 120),
     ?T(no_sleep_between_calls, 120)].

-define(SENDERS, 4).
-define(MSGS, 3000).     % per sender
-define(CALLERS, 8).
-define(CALLS, 300).     % per caller
-define(CALLS_B2B, 3000). % one caller's back-to-back calls

start(C, Extra) ->
    {ok, A, NA} = cnb_cluster:start_node(C, #{name => "a"}),
    {ok, Port, CN} = cnb_cluster:start_cnode(
                       C, ["--cookie", cnb_cluster:cookie(C), "--sname",
                           cnb_cluster:unique_name("c"), "--demo", "--connect",
                           atom_to_list(NA) | Extra]),
    {A, Port, CN}.

order_kept_spin_default(C) -> order_kept(C, []).

%% Spinning longer than any gap in the traffic: the pool thread and the I/O
%% thread hand almost everything over without sleeping.
order_kept_spin_long(C) -> order_kept(C, ["--spin-us", "5000"]).

order_kept_spin_off(C) -> order_kept(C, ["--spin-us", "0"]).

%% Two probes (so both pool threads run), each subscribed to a collector:
%% SENDERS processes send MSGS messages {m, Sender, I} to them, a call to
%% the probe every 50 messages, while CALLERS processes call echo; each
%% sender's messages reach the collector in the order sent, and every call
%% gets its own request back.
order_kept(C, Extra) ->
    {A, _Port, CN} = start(C, Extra),
    Result = cnb_cluster:call(A, ?MODULE, traffic, [CN, ?SENDERS, ?MSGS], 150000),
    ?assertEqual(ok, Result).

%% On the peer: the whole exchange; ok or what went wrong.
traffic(CN, Senders, Msgs) ->
    Self = self(),
    Probes = [begin
                  {ok, P} = gen_server:call({probe, CN}, spawn),
                  ok = gen_server:call(P, {subscribe, Self}),
                  P
              end || _ <- [1, 2]],
    Ss = [spawn_link(?MODULE, sender, [Self, lists:nth(1 + K rem 2, Probes), K, Msgs])
          || K <- lists:seq(1, Senders)],
    cnb_traffic:check(CN, Ss, Msgs, {?CALLERS, ?CALLS, 30000}, fun(M) -> M end).

sender(Parent, Probe, K, Msgs) ->
    lists:foreach(fun(I) ->
                          Probe ! {m, K, I},
                          I rem 50 =:= 0 andalso (ok = gen_server:call(Probe, {trap_exit, false}))
                  end, lists:seq(1, Msgs)),
    Parent ! {sent, self()}.

%% After a burst of calls and messages (spinning at its longest), the node
%% goes quiet: over 3 s it takes at most 3% of a core (its 100 ms timer and
%% ticks cost a few milliseconds; a thread still spinning would take 100%).
idle_node_takes_no_cpu(C) ->
    {A, Port, CN} = start(C, ["--spin-us", "5000"]),
    ok = cnb_cluster:call(A, ?MODULE, traffic, [CN, 2, 1000], 100000),
    OsPid = cnb_cluster:cnode_os_pid(C, Port),
    timer:sleep(500),
    T0 = cpu_ticks(OsPid),
    timer:sleep(3000),
    Used = cpu_ticks(OsPid) - T0,
    Hz = 100, % USER_HZ on Linux
    ?debugFmt("idle C node: ~b ms of CPU in 3 s", [Used * 1000 div Hz]),
    ?assert(Used * 1000 div Hz =< 90).

%% One process on a calls echo CALLS_B2B times, each call sent when the last
%% one's reply came. A C node spinning 5 ms (longer than any gap between two
%% of these calls, even on a loaded machine) hands each request to a
%% spinning pool thread, spins for the reply, and then, having read input
%% since it last slept, spins for the next request instead of sleeping in
%% epoll: its threads sleep (voluntary context switches, which a spinning
%% thread's sched_yield or a preemption does not count) under 0.2 times per
%% call. Before the I/O thread spun for input it slept once per call, woken
%% by the next request. With --spin-us 0 (no spinning) the same calls make
%% its threads sleep about once per call or more (seen: 1.0-1.4): the count
%% sees the sleeps. On a loaded machine it may not (0.14 seen while other
%% suites ran: a thread preempted after its reply finds the next request
%% waiting, and a preemption is no sleep), and a spin may run out while the
%% caller waits for a CPU; so the pair is measured up to three times and
%% passes when one measurement shows both.
no_sleep_between_calls(C) ->
    {ok, A, NA} = cnb_cluster:start_node(C, #{name => "a"}),
    Per = fun(Spin) ->
                  {ok, Port, CN} = cnb_cluster:start_cnode(
                                     C, ["--cookie", cnb_cluster:cookie(C), "--sname",
                                         cnb_cluster:unique_name("c"), "--demo", "--connect",
                                         atom_to_list(NA), "--spin-us", Spin]),
                  OsPid = cnb_cluster:cnode_os_pid(C, Port),
                  ok = cnb_cluster:call(A, ?MODULE, calls, [CN, 300], 60000),
                  V0 = sleeps(OsPid),
                  ok = cnb_cluster:call(A, ?MODULE, calls, [CN, ?CALLS_B2B], 60000),
                  (sleeps(OsPid) - V0) / ?CALLS_B2B
          end,
    Pair = fun() ->
                   Spinning = Per("5000"),
                   Off = Per("0"),
                   ?debugFmt("C node sleeps per back-to-back call: ~.3f spinning 5 ms, ~.3f not spinning",
                             [Spinning, Off]),
                   {Off > 0.5, Spinning < 0.2}
           end,
    Got = measured(Pair, 3),
    ?assertEqual({true, true}, Got).

%% Pair() until it gives {true, true}, at most N times; its last result.
measured(Pair, N) ->
    case Pair() of
        {true, true} = R -> R;
        R when N =< 1 -> R;
        _ -> measured(Pair, N - 1)
    end.

%% On the peer: N calls to echo, one after the other; ok or the first wrong reply.
calls(CN, N) ->
    Self = self(),
    _ = spawn_link(cnb_traffic, caller, [Self, {echo, CN}, 1, {N, 10000}]),
    receive {called, _, R} -> R after 60000 -> timeout end.

%% voluntary_ctxt_switches of every thread of the process.
sleeps(OsPid) ->
    Dir = "/proc/" ++ integer_to_list(OsPid) ++ "/task",
    {ok, Tids} = file:list_dir(Dir),
    lists:sum([case file:read_file(Dir ++ "/" ++ T ++ "/status") of
                   {ok, S} ->
                       {match, [V]} = re:run(S, "^voluntary_ctxt_switches:\\s+(\\d+)",
                                             [multiline, {capture, all_but_first, list}]),
                       list_to_integer(V);
                   {error, _} -> 0 % a thread that ended meanwhile
               end || T <- Tids]).

%% utime + stime of the whole process (every thread), in clock ticks.
cpu_ticks(OsPid) ->
    {ok, S} = file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/stat"),
    [_, Rest] = binary:split(S, <<") ">>),
    Fields = string:lexemes(binary_to_list(Rest), " "),
    list_to_integer(lists:nth(12, Fields)) + list_to_integer(lists:nth(13, Fields)).
