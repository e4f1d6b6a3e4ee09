%% Simultaneous connects (issue 12, item 1): the C node and an Erlang node dial
%% each other at the same instant, in both name orders, many rounds; every
%% message sent from either side while the connection was being set up arrives,
%% in order, over whichever attempt won, and the race really happened (counted
%% from the C node's debug log). their_attempt_test_ checks the rule that
%% decides the race without one. Run: ITEST_ONLY=simultaneous_tests scripts/run-tests itest
-module(simultaneous_tests).
-include_lib("eunit/include/eunit.hrl").

%% Run on the peer nodes.
-export([start_collector/0, got/4, fire_at/4]).

-define(ROUNDS, 15).
-define(MSGS, 5).
%% The race must be seen in at least this many rounds, or the test did not
%% test what it names. It is seen in 10-14 of 15 rounds on a quiet machine
%% and in as few as 5 under load, so rounds go on past ?ROUNDS, up to
%% ?MAX_ROUNDS, until it has been seen that often.
-define(MIN_RACES, 8).
-define(MAX_ROUNDS, 60).

simultaneous_test_() ->
    [{"C node name sorts below the peer's: the peer's attempt wins",
      {timeout, 300, fun() -> rounds("a", "z") end}},
     {"C node name sorts above the peer's: our attempt wins",
      {timeout, 300, fun() -> rounds("z", "a") end}}].

%% The rule behind the rounds above, made without a race: while a node's own
%% attempt to connect to the C node is under way, messages for that node wait
%% for it (as net_kernel's pending connections make them wait) instead of
%% racing it with an attempt of ours. A client without the cookie claims the
%% real node A's name and stalls (or gives up) inside the handshake, so the
%% C node must dial A itself in the end: after THEIR_ATTEMPT_WAIT_MS when the
%% attempt stalls, at once when it fails.
their_attempt_test_() ->
    [{"a message waits for the peer's attempt; dialed when that attempt stalls",
      {timeout, 60, fun() -> their_attempt(stall) end}},
     {"a message waits for the peer's attempt; dialed when that attempt fails",
      {timeout, 60, fun() -> their_attempt(fail) end}}].

their_attempt(How) ->
    C = cnb_cluster:new(),
    try
        {ok, A, NA} = cnb_cluster:start_node(C, #{name => "a"}),
        {ok, B, _} = cnb_cluster:start_node(C, #{name => "m"}),
        TcpPort = cnb_cluster:free_port(),
        {ok, Port, CN} = cnb_cluster:start_cnode(
                           C, ["--cookie", cnb_cluster:cookie(C), "--port", integer_to_list(TcpPort),
                               "--sname", cnb_cluster:unique_name("c"), "--demo",
                               "--log-level", "debug"]),
        {ok, ToA} = cnb_cluster:call(B, gen_server, call, [{probe, CN}, spawn]),
        ACol = cnb_cluster:call(A, ?MODULE, start_collector, []),
        ok = cnb_cluster:call(B, gen_server, call, [ToA, {subscribe, ACol}]),
        SA = atom_to_list(NA),
        ?assertEqual(0, cnb_cnode:count_lines(C, Port, "connected (to|from) " ++ SA)),
        {S, Status} = cnb_cnode:claim_name(TcpPort, NA, false),
        ?assertEqual(<<"ok">>, Status),
        ok = cnb_cluster:call(B, ?MODULE, fire_at, [0, ToA, 1, 1]),
        cnb_cnode:wait_line(C, Port, "message for " ++ SA ++ " waits for its attempt"),
        Dialed = case How of
                     stall -> SA ++ "'s attempt to connect has not come up in [0-9]+ ms: dialing it";
                     fail -> gen_tcp:close(S),
                             SA ++ "'s attempt to connect failed: dialing it"
                 end,
        ?assertEqual([1], cnb_cluster:call(A, ?MODULE, got, [ACol, 1, 1, 10000], 15000)),
        cnb_cnode:wait_line(C, Port, Dialed),
        ?assertEqual(1, cnb_cnode:count_lines(C, Port, "connected to " ++ SA)),
        ?assertEqual([], [L || L <- cnb_cluster:cnode_output(C, Port),
                               re:run(L, "dropped") =/= nomatch]),
        gen_tcp:close(S)
    after
        cnb_cluster:stop(C)
    end.

%% CPrefix/PPrefix start the C node's and the racing peer's names, so they
%% sort one way or the other (same host: the alive parts decide).
rounds(CPrefix, PPrefix) ->
    C = cnb_cluster:new(),
    try
        {ok, A, NA} = cnb_cluster:start_node(C, #{name => PPrefix}),
        {ok, B, _} = cnb_cluster:start_node(C, #{name => "m"}),
        CName = cnb_cluster:unique_name(CPrefix),
        {ok, Port, CN} = cnb_cluster:start_cnode(
                           C, ["--cookie", cnb_cluster:cookie(C), "--sname", CName, "--demo",
                               "--log-level", "debug"]),
        ?assertEqual(CPrefix < PPrefix, atom_to_list(CN) < atom_to_list(NA)),
        %% B is the controller: connected to the C node the whole time, never to A.
        {ok, ToA} = cnb_cluster:call(B, gen_server, call, [{probe, CN}, spawn]),
        {ok, ToB} = cnb_cluster:call(B, gen_server, call, [{probe, CN}, spawn]),
        ACol = cnb_cluster:call(A, ?MODULE, start_collector, []),
        BCol = cnb_cluster:call(B, ?MODULE, start_collector, []),
        ok = cnb_cluster:call(B, gen_server, call, [ToA, {subscribe, ACol}]),
        ok = cnb_cluster:call(B, gen_server, call, [ToB, {subscribe, BCol}]),
        {Rounds, Seen} = run_rounds(fun(R) -> round(C, Port, A, B, NA, CN, ToA, ToB, ACol, BCol, R) end,
                                    1, 0),
        ?debugFmt("~s (C) vs ~s (peer): simultaneous connects seen in ~b of ~b rounds",
                  [CN, NA, Seen, Rounds]),
        Out = cnb_cluster:cnode_output(C, Port),
        Kinds = [{K, length([L || L <- Out, re:run(L, Re) =/= nomatch])}
                 || {K, Re} <- [{we_answered_nok, "ours \\(answered nok\\)"},
                                {we_answered_ok_simultaneous, "theirs \\(answered ok_simultaneous"},
                                {they_answered_nok, "they answered nok"},
                                {they_answered_ok_simultaneous, "they answered ok_simultaneous"},
                                {dialed_again, "dialing again"},
                                {held_moved, "held message"},
                                {waited_for_theirs, "waits for its attempt to connect here"}]],
        ?debugFmt("how the races went (log lines): ~p", [Kinds]),
        Dropped = [L || L <- Out, re:run(L, "dropped|message dropped") =/= nomatch],
        ?assertEqual([], Dropped),
        ?assert(Seen >= ?MIN_RACES)
    after
        cnb_cluster:stop(C)
    end.

%% Runs Round(R) for R = 1, 2, ... (each true when the race was seen): at
%% least ?ROUNDS rounds, then more until ?MIN_RACES races were seen or
%% ?MAX_ROUNDS rounds ran. {Rounds run, races seen}.
run_rounds(_, R, Seen) when R > ?MAX_ROUNDS; R > ?ROUNDS, Seen >= ?MIN_RACES -> {R - 1, Seen};
run_rounds(Round, R, Seen) ->
    run_rounds(Round, R + 1, Seen + case Round(R) of true -> 1; false -> 0 end).

%% One round: both sides disconnected, then at one instant B makes the C node
%% send ?MSGS messages to A (through the probe ToA) while A sends ?MSGS
%% messages to the C node (to the probe ToB, which forwards them to B). Returns
%% whether the C node's log shows a simultaneous connect in this round.
round(C, Port, A, B, NA, CN, ToA, ToB, ACol, BCol, R) ->
    disconnect(C, Port, A, NA, CN),
    Before = length(cnb_cluster:cnode_output(C, Port)),
    T = os:system_time(microsecond) + 300000,
    %% Our attempt reaches the peer a little sooner than theirs reaches us, so
    %% the race mostly resolves on their acceptor; starting the peer up to 3 ms
    %% earlier in some rounds makes it resolve on ours too.
    Delay = lists:nth(1 + R rem 5, [0, -500, -1000, -2000, -3000]),
    ok = cnb_cluster:call(A, ?MODULE, fire_at, [T + Delay, ToB, R, ?MSGS]),
    ok = cnb_cluster:call(B, ?MODULE, fire_at, [T, ToA, R, ?MSGS]),
    Want = lists:seq(1, ?MSGS),
    GotA = cnb_cluster:call(A, ?MODULE, got, [ACol, R, ?MSGS, 15000], 20000),
    GotB = cnb_cluster:call(B, ?MODULE, got, [BCol, R, ?MSGS, 15000], 20000),
    New = lists:nthtail(Before, cnb_cluster:cnode_output(C, Port)),
    ?assertEqual({R, c_to_peer, Want, New}, {R, c_to_peer, GotA, New}),
    ?assertEqual({R, peer_to_c, Want}, {R, peer_to_c, GotB}),
    Re = "simultaneous connect with " ++ atom_to_list(NA),
    lists:any(fun(L) -> re:run(L, Re) =/= nomatch end, New).

%% Both sides drop the connection, and the C node's log shows every
%% connection to A that came up has closed again.
disconnect(C, Port, A, NA, CN) ->
    cnb_cluster:call(A, erlang, disconnect_node, [CN]),
    Up = "connected (to|from) " ++ atom_to_list(NA) ++ " ",
    Down = "connection (to|from) " ++ atom_to_list(NA) ++ " closed",
    Count = fun(Re) -> length([L || L <- cnb_cluster:cnode_output(C, Port),
                                     re:run(L, Re) =/= nomatch]) end,
    ?assert(cnb_cluster:wait_until(
              fun() -> Count(Up) =:= Count(Down) andalso
                           not lists:member(CN, cnb_cluster:call(A, erlang, nodes, [hidden]))
              end, 10000)).

%%% ------------------------------------------------------------------ run on peers

%% A process that keeps what the probes forward, by round.
start_collector() ->
    spawn(fun() -> collect(#{}) end).

collect(M) ->
    receive
        {probe_info, _, {R, I}} -> collect(maps:update_with(R, fun(L) -> [I | L] end, [I], M));
        {get, R, From} -> From ! {got, lists:reverse(maps:get(R, M, []))}, collect(M)
    end.

%% What Col holds for round R once it holds N messages, or after Ms.
got(Col, R, N, Ms) ->
    Deadline = erlang:monotonic_time(millisecond) + Ms,
    got_loop(Col, R, N, Deadline).

got_loop(Col, R, N, Deadline) ->
    Col ! {get, R, self()},
    L = receive {got, X} -> X end,
    case length(L) >= N orelse erlang:monotonic_time(millisecond) > Deadline of
        true -> L;
        false -> timer:sleep(10), got_loop(Col, R, N, Deadline)
    end.

%% At system time T (microseconds) sends {R, 1..N} to To, from a process of
%% its own; returns at once.
fire_at(T, To, R, N) ->
    spawn(fun() ->
                  spin_until(T),
                  [To ! {R, I} || I <- lists:seq(1, N)]
          end),
    ok.

spin_until(T) ->
    case T - os:system_time(microsecond) of
        Left when Left > 5000 -> timer:sleep(Left div 1000 - 3), spin_until(T);
        Left when Left > 0 -> spin_until(T);
        _ -> ok
    end.
