%% Hostile connections (issue 13): a client without the cookie that speaks the
%% handshake and claims the name of a connected node must neither take that
%% node's traffic nor stop the C node from reconnecting to its --connect
%% anchor; idle connections up to the fd limit must not make the loop spin
%% or flood the log, and a legit node gets in once they are gone.
%% Run: ITEST_ONLY=hostile_conn_tests scripts/run-tests itest
-module(hostile_conn_tests).
-include_lib("eunit/include/eunit.hrl").

%% Run on the peer nodes.
-export([call_loop/3]).

-define(T(Name, Secs), {atom_to_list(Name), {timeout, Secs, fun() -> with_cluster(fun Name/1) end}}).

hostile_conn_test_() ->
    [?T(squatter_takes_no_replies, 90),
     ?T(squatter_does_not_stop_reconnect, 90),
     ?T(fd_exhaustion, 120)].

with_cluster(F) -> cnb_cluster:with(F).

start_c(C, Args) -> start_c(C, Args, [], #{}).

%% Prefix goes before the cnode options: the arguments of Opts' exe.
start_c(C, Args, Prefix, Opts) ->
    TcpPort = cnb_cluster:free_port(),
    {ok, Port, Node} = cnb_cluster:start_cnode(
                         C, {Prefix ++ ["--cookie", cnb_cluster:cookie(C),
                                        "--port", integer_to_list(TcpPort) | Args], Opts}),
    {Port, Node, TcpPort}.

squat(TcpPort, Name, AnswerAlive) -> cnb_cnode:claim_name(TcpPort, Name, AnswerAlive).

%% A real node keeps calling a C worker while two cookie-less clients claim
%% its name, one of them answering true to alive: every call is answered.
squatter_takes_no_replies(C) ->
    {ok, A, NA} = cnb_cluster:start_node(C, #{name => "a"}),
    {Port, CN, TcpPort} = start_c(C, ["--sname", cnb_cluster:unique_name("c"), "--demo"]),
    ?assertEqual(pong, cnb_cluster:call(A, net_adm, ping, [CN])),
    {S1, St1} = squat(TcpPort, NA, false),
    {S2, St2} = squat(TcpPort, NA, true),
    {Ok, Failed} = cnb_cluster:call(A, ?MODULE, call_loop, [CN, 3000, {0, 0}], 60000),
    ?debugFmt("~b calls answered, ~b failed while two clients squatted the caller's name",
              [Ok, Failed]),
    ?assert(Ok > 0),
    ?assertEqual(0, Failed),
    %% Both were told that a live connection exists (ERTS's up_pending).
    ?assertEqual({<<"alive">>, <<"alive">>}, {St1, St2}),
    %% The live connection was neither replaced nor dropped.
    ?assertEqual(1, cnb_cnode:count_lines(C, Port, "connected from " ++ atom_to_list(NA))),
    ?assertEqual(0, cnb_cnode:count_lines(C, Port, "connection from " ++ atom_to_list(NA) ++ " closed")),
    gen_tcp:close(S1),
    gen_tcp:close(S2).

%% The --connect anchor's name is squatted again and again while the anchor
%% drops its connection: the C node reconnects all the same.
squatter_does_not_stop_reconnect(C) ->
    {ok, A, NA} = cnb_cluster:start_node(C, #{name => "a"}),
    {Port, CN, TcpPort} = start_c(C, ["--sname", cnb_cluster:unique_name("c"),
                                      "--connect", atom_to_list(NA)]),
    Up = "connected to " ++ atom_to_list(NA),
    ?assert(cnb_cluster:wait_until(fun() -> cnb_cnode:count_lines(C, Port, Up) =:= 1 end, 5000)),
    Self = self(),
    Squatter = spawn_link(fun() -> squat_loop(TcpPort, NA, Self, []) end),
    receive {squatting, Squatter} -> ok after 5000 -> error(no_squat) end,
    true = cnb_cluster:call(A, erlang, disconnect_node, [CN]),
    T0 = erlang:monotonic_time(millisecond),
    Reconnected = cnb_cluster:wait_until(fun() -> cnb_cnode:count_lines(C, Port, Up) >= 2 end, 5000),
    ?debugFmt("reconnected: ~p after ~b ms, with the anchor's name squatted",
              [Reconnected, erlang:monotonic_time(millisecond) - T0]),
    unlink(Squatter),
    exit(Squatter, kill),
    ?assert(Reconnected),
    ?assert(cnb_cluster:wait_until(
              fun() -> lists:member(CN, cnb_cluster:call(A, erlang, nodes, [hidden])) end, 5000)).

%% A new squatting connection every 200 ms, all kept open.
squat_loop(TcpPort, Name, Parent, Socks) ->
    {S, _} = squat(TcpPort, Name, false),
    Parent ! {squatting, self()},
    timer:sleep(200),
    squat_loop(TcpPort, Name, Parent, [S | Socks]).

%% The C node runs with 64 file descriptors; 200 idle connections exhaust
%% them. Its log stays small (no spin), and once the idle ones close a real
%% node connects and calls.
fd_exhaustion(C) ->
    Prlimit = os:find_executable("prlimit"),
    ?assert(is_list(Prlimit)),
    Exe = filename:join([cnb_cluster:root(), "erlang_side", "priv", "cnode"]),
    {Port, CN, TcpPort} = start_c(C, ["--sname", cnb_cluster:unique_name("c"), "--demo",
                                      "--setuptime", "60"],
                                  ["--nofile=64:64", Exe], #{exe => Prlimit}),
    Idle = idle_connections(TcpPort, 200, []),
    timer:sleep(3000),
    Lines = length(cnb_cluster:cnode_output(C, Port)),
    Exhausted = cnb_cnode:count_lines(C, Port, "Too many open files"),
    ?debugFmt("~b idle connections opened; the C node wrote ~b log lines in 3 s at its fd limit",
              [length(Idle), Lines]),
    ?assert(Exhausted >= 1),
    ?assert(Lines < 50),
    [gen_tcp:close(S) || S <- Idle],
    {ok, A, _} = cnb_cluster:start_node(C, #{name => "a"}),
    ?assert(cnb_cluster:wait_until(
              fun() -> cnb_cluster:call(A, net_adm, ping, [CN]) =:= pong end, 10000)),
    ?assertEqual(hi, cnb_cluster:call(A, gen_server, call, [{echo, CN}, hi])),
    ?assert(cnb_cluster:cnode_alive(C, Port)).

idle_connections(_TcpPort, 0, Acc) -> Acc;
idle_connections(TcpPort, N, Acc) ->
    case gen_tcp:connect({127, 0, 0, 1}, TcpPort, [binary, {active, false}], 1000) of
        {ok, S} -> idle_connections(TcpPort, N - 1, [S | Acc]);
        {error, _} -> Acc
    end.

%%% ------------------------------------------------------------------ run on peers

%% Calls the C node's echo worker for Ms; returns {Answered, Failed}.
call_loop(CN, Ms, Acc) ->
    Deadline = erlang:monotonic_time(millisecond) + Ms,
    call_loop_(CN, Deadline, Acc).

call_loop_(CN, Deadline, {Ok, Failed}) ->
    case erlang:monotonic_time(millisecond) > Deadline of
        true -> {Ok, Failed};
        false ->
            Acc = try gen_server:call({echo, CN}, {hi, Ok}, 2000) of
                      {hi, Ok} -> {Ok + 1, Failed};
                      _ -> {Ok, Failed + 1}
                  catch _:_ -> {Ok, Failed + 1}
                  end,
            timer:sleep(10),
            call_loop_(CN, Deadline, Acc)
    end.
