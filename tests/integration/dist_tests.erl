%% Integration tests of the distribution layer (issue 3) against real OTP nodes
%% and the real cnode program: connecting out to -sname and -name nodes,
%% connections in (net_adm:ping), many nodes at once beside a stalled peer,
%% wrong cookies, ticks, --no-epmd, IPv6, garbage on the listen port, and
%% large (fragmented) messages.
-module(dist_tests).
-include_lib("eunit/include/eunit.hrl").

%% Run on the peer nodes.
-export([echo_pid/1, ping_pid/1, monitor_reason/1, echo_check/2, ping_until_pong/2,
         await/1]).

-define(T(Name, Secs), {atom_to_list(Name), {timeout, Secs, fun() -> with_cluster(fun Name/1) end}}).

dist_test_() ->
    [?T(connect_out_sname, 60),
     ?T(connect_out_name, 60),
     ?T(connect_in_ping, 60),
     ?T(many_nodes_with_stalled_peer, 120),
     ?T(wrong_cookie_inbound, 60),
     ?T(wrong_cookie_outbound, 60),
     ?T(silent_peer_dropped, 60),
     ?T(no_epmd, 60),
     ?T(ipv6, 60),
     ?T(garbage_on_listen_port, 60),
     ?T(big_messages_both_ways, 90),
     ?T(too_big_message_closes, 60),
     ?T(stale_creation_dropped, 60),
     ?T(bad_flags_exit_2, 30),
     ?T(connect_at_start_while_peer_pings, 120),
     ?T(reconnects_to_connect_nodes, 60)].

with_cluster(F) -> cnb_cluster:with(F).

cname(Prefix) -> cnb_cluster:unique_name(Prefix).

hidden_has(Peer, Node) ->
    lists:member(Node, cnb_cluster:call(Peer, erlang, nodes, [hidden])).

%%% ------------------------------------------------------------------ tests

connect_out_sname(C) ->
    {ok, A, NA} = cnb_cluster:start_node(C, #{name => "a"}),
    {_Port, CN} = cnb_cnode:start(C, ["--sname", cname("c"), "--connect", atom_to_list(NA)]),
    ?assert(cnb_cluster:wait_until(fun() -> hidden_has(A, CN) end, 5000)),
    %% The C node is hidden: not in nodes().
    ?assertNot(lists:member(CN, cnb_cluster:call(A, erlang, nodes, []))).

connect_out_name(C) ->
    {ok, A, NA} = cnb_cluster:start_node(C, #{name => "a", longnames => true}),
    {_Port, CN} = cnb_cnode:start(C, ["--name", cname("c") ++ "@127.0.0.1",
                              "--connect", atom_to_list(NA)]),
    ?assert(cnb_cluster:wait_until(fun() -> hidden_has(A, CN) end, 5000)).

connect_in_ping(C) ->
    {ok, A, _} = cnb_cluster:start_node(C, #{name => "a"}),
    {Port, CN} = cnb_cnode:start(C, ["--sname", cname("c"), "--demo"]),
    ?assertEqual(pong, cnb_cluster:call(A, net_adm, ping, [CN])),
    ?assert(hidden_has(A, CN)),
    %% Messages both ways over the connection the peer opened.
    Reply = cnb_cluster:call(A, gen_server, call, [{echo, CN}, {hello, self}]),
    ?assertEqual({hello, self}, Reply),
    cnb_cnode:wait_line(C, Port, "connected from").

%% Ten nodes ping the C node at once while another client sits in the middle
%% of a handshake; every ping answers while that client still sits there, so
%% none waited for its set-up time-out (60 s here). No wall-clock bound: on a
%% loaded machine ten node starts and pings may take seconds.
many_nodes_with_stalled_peer(C) ->
    Peers = [begin {ok, P, _} = cnb_cluster:start_node(C, #{name => "m"}), P end
             || _ <- lists:seq(1, 10)],
    TcpPort = cnb_cluster:free_port(),
    {_Port, CN} = cnb_cnode:start(C, ["--sname", cname("c"), "--port", integer_to_list(TcpPort),
                                      "--setuptime", "60"]),
    %% A peer that sends half a send_name and then nothing.
    {ok, Stall} = gen_tcp:connect({127, 0, 0, 1}, TcpPort, [binary, {active, false}]),
    ok = gen_tcp:send(Stall, <<0, 40, $N, 0, 0, 0>>),
    timer:sleep(100),
    Self = self(),
    T0 = erlang:monotonic_time(millisecond),
    [spawn_link(fun() ->
                        R = cnb_cluster:call(P, net_adm, ping, [CN]),
                        Self ! {pinged, P, R, erlang:monotonic_time(millisecond) - T0}
                end) || P <- Peers],
    Results = [receive {pinged, P, R, Ms} -> {R, Ms} after 30000 -> timeout end || P <- Peers],
    ?assertEqual(lists:duplicate(10, pong), [R || {R, _} <- Results]),
    ?debugFmt("slowest of 10 pings beside a stalled handshake: ~b ms",
              [lists:max([Ms || {_, Ms} <- Results])]),
    %% The stalled client is still connected, mid-handshake.
    ?assertEqual({error, timeout}, gen_tcp:recv(Stall, 0, 0)),
    gen_tcp:close(Stall).

wrong_cookie_inbound(C) ->
    {ok, Bad, _} = cnb_cluster:start_node(C, #{name => "bad", cookie => "not_the_cookie"}),
    {ok, Good, _} = cnb_cluster:start_node(C, #{name => "good"}),
    {Port, CN} = cnb_cnode:start(C, ["--sname", cname("c")]),
    ?assertEqual(pang, cnb_cluster:call(Bad, net_adm, ping, [CN])),
    cnb_cnode:wait_line(C, Port, "wrong cookie"),
    %% Still serving others.
    ?assertEqual(pong, cnb_cluster:call(Good, net_adm, ping, [CN])).

wrong_cookie_outbound(C) ->
    {ok, Other, NO} = cnb_cluster:start_node(C, #{name => "other", cookie => "not_the_cookie"}),
    {ok, Good, NG} = cnb_cluster:start_node(C, #{name => "good"}),
    {Port, CN} = cnb_cnode:start(C, ["--sname", cname("c"), "--connect", atom_to_list(NO),
                             "--connect", atom_to_list(NG)]),
    cnb_cnode:wait_line(C, Port, "wrong cookie"),
    ?assert(cnb_cluster:wait_until(fun() -> hidden_has(Good, CN) end, 5000)),
    ?assertNot(hidden_has(Other, CN)).

%% A peer that stops answering (SIGSTOP) is dropped after the tick timeout;
%% a live one stays connected across several tick periods.
silent_peer_dropped(C) ->
    Args = ["-kernel", "net_ticktime", "2"],
    {ok, Live, _} = cnb_cluster:start_node(C, #{name => "live", args => Args}),
    {ok, Mute, _} = cnb_cluster:start_node(C, #{name => "mute", args => Args}),
    {Port, CN} = cnb_cnode:start(C, ["--sname", cname("c"), "--ticktime", "2"]),
    ?assertEqual(pong, cnb_cluster:call(Live, net_adm, ping, [CN])),
    ?assertEqual(pong, cnb_cluster:call(Mute, net_adm, ping, [CN])),
    MutePid = cnb_cluster:call(Mute, os, getpid, []),
    _ = os:cmd("kill -STOP " ++ MutePid),
    try
        cnb_cnode:wait_line(C, Port, "no ticks or data"),
        %% The live peer kept its one connection throughout.
        timer:sleep(2500),
        ?assert(hidden_has(Live, CN)),
        Connected = [L || L <- cnb_cluster:cnode_output(C, Port),
                          re:run(L, "connected from live") =/= nomatch],
        ?assertEqual(1, length(Connected))
    after
        os:cmd("kill -CONT " ++ MutePid)
    end.

%% Without epmd: the Erlang node listens on a fixed port (-erl_epmd_port) and
%% the C node is told name@host:port.
no_epmd(C) ->
    P = cnb_cluster:free_port(),
    {ok, A, NA} = cnb_cluster:start_node(C, #{name => "a",
                                              args => ["-erl_epmd_port", integer_to_list(P),
                                                       "-start_epmd", "false"]}),
    {_Port, CN} = cnb_cnode:start(C, ["--sname", cname("c"), "--no-epmd",
                              "--connect", atom_to_list(NA) ++ ":" ++ integer_to_list(P)]),
    ?assert(cnb_cluster:wait_until(fun() -> hidden_has(A, CN) end, 5000)),
    %% And the C node is not in epmd.
    Names = epmd_names(C),
    ?assertNot(lists:any(fun({N, _}) -> lists:prefix("c_", N) end, Names)).

epmd_names(C) ->
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, cnb_cluster:epmd_port(C), [binary, {active, false}]),
    ok = gen_tcp:send(S, <<0, 1, 110>>),
    {ok, <<_:32, Text/binary>>} = recv_all(S, <<>>),
    case re:run(Text, "name (\\S+) at port (\\d+)", [global, {capture, all_but_first, list}]) of
        {match, L} -> [{N, list_to_integer(Pt)} || [N, Pt] <- L];
        nomatch -> []
    end.

recv_all(S, Acc) ->
    case gen_tcp:recv(S, 0, 2000) of
        {ok, D} -> recv_all(S, <<Acc/binary, D/binary>>);
        {error, closed} -> {ok, Acc}
    end.

ipv6(C) ->
    {ok, A, NA} = cnb_cluster:start_node(C, #{name => "a6", longnames => true, host => "::1",
                                              args => ["-proto_dist", "inet6_tcp"]}),
    {Port, CN} = cnb_cnode:start(C, ["--name", cname("c6") ++ "@::1", "--ipv6", "--demo",
                             "--connect", atom_to_list(NA)]),
    ?assert(cnb_cluster:wait_until(fun() -> hidden_has(A, CN) end, 5000)),
    ?assertEqual({v6, x}, cnb_cluster:call(A, gen_server, call, [{echo, CN}, {v6, x}])),
    cnb_cnode:wait_line(C, Port, "\\(::1"),
    %% Inbound over IPv6 too.
    {ok, B, _} = cnb_cluster:start_node(C, #{name => "b6", longnames => true, host => "::1",
                                             args => ["-proto_dist", "inet6_tcp"]}),
    ?assertEqual(pong, cnb_cluster:call(B, net_adm, ping, [CN])).

garbage_on_listen_port(C) ->
    {ok, A, _} = cnb_cluster:start_node(C, #{name => "a"}),
    TcpPort = cnb_cluster:free_port(),
    {Port, CN} = cnb_cnode:start(C, ["--sname", cname("c"), "--port", integer_to_list(TcpPort)]),
    Junk = [<<"GET / HTTP/1.1\r\nHost: x\r\n\r\n">>,
            <<0, 3, $N, 1, 2>>,                      % truncated send_name
            <<0, 20, $n, 0:152>>,                    % old v5 handshake
            crypto:strong_rand_bytes(300)],
    [begin
         {ok, S} = gen_tcp:connect({127, 0, 0, 1}, TcpPort, [binary, {active, false}]),
         ok = gen_tcp:send(S, J),
         %% The node either closes on us or waits; it never crashes.
         _ = gen_tcp:recv(S, 0, 300),
         gen_tcp:close(S)
     end || J <- Junk],
    cnb_cnode:wait_line(C, Port, "handshake failed"),
    ?assert(cnb_cluster:cnode_alive(C, Port)),
    ?assertEqual(pong, cnb_cluster:call(A, net_adm, ping, [CN])).

%% Messages of several MB cross in both directions (erts fragments large
%% messages; the C node reassembles them).
big_messages_both_ways(C) ->
    {ok, A, _} = cnb_cluster:start_node(C, #{name => "a"}),
    {_Port, CN} = cnb_cnode:start(C, ["--sname", cname("c"), "--demo"]),
    %% Built and compared on the peer: only the verdict crosses peer's stdio.
    [?assertEqual({Size, true}, {Size, cnb_cluster:call(A, ?MODULE, echo_check, [CN, Size])})
     || Size <- [100, 70000, 1 bsl 20, 20 bsl 20]].

too_big_message_closes(C) ->
    {ok, A, _} = cnb_cluster:start_node(C, #{name => "a"}),
    {Port, CN} = cnb_cnode:start(C, ["--sname", cname("c"), "--demo", "--max-message", "100000"]),
    ?assertEqual(ok, cnb_cluster:call(A, gen_server, call, [{echo, CN}, ok])),
    cnb_cluster:call(A, erlang, send, [{echo, CN}, {big, binary:copy(<<1>>, 500000)}]),
    cnb_cnode:wait_line(C, Port, "exceeds the limit"),
    %% The node goes on; a new connection works.
    ?assert(cnb_cluster:wait_until(fun() -> not hidden_has(A, CN) end, 5000)),
    ?assertEqual(ok, cnb_cluster:call(A, gen_server, call, [{echo, CN}, ok])).

%% A message to the echo pid of an earlier incarnation of a node with the same
%% name is dropped; a monitor on it reports noproc.
stale_creation_dropped(C) ->
    {ok, A, _} = cnb_cluster:start_node(C, #{name => "a"}),
    Name = cname("c"),
    {Port1, CN} = cnb_cnode:start(C, ["--sname", Name, "--demo"]),
    Old = cnb_cluster:call(A, ?MODULE, echo_pid, [CN]),
    {ok, _} = cnb_cluster:stop_cnode(C, Port1),
    {_Port2, CN} = cnb_cnode:start(C, ["--sname", Name, "--demo"]),
    New = cnb_cluster:call(A, ?MODULE, echo_pid, [CN]),
    ?assertNotEqual(Old, New),
    ?assertEqual(timeout, cnb_cluster:call(A, ?MODULE, ping_pid, [Old])),
    ?assertEqual(pong, cnb_cluster:call(A, ?MODULE, ping_pid, [New])),
    ?assertEqual(noproc, cnb_cluster:call(A, ?MODULE, monitor_reason, [Old])).

%% The peer pings the C node before it exists while the C node connects out
%% to the peer at start: exactly one connection ends up. Whether the two
%% attempts raced is left to chance here; simultaneous_tests makes the race
%% happen for real, in both name orders, and counts it.
connect_at_start_while_peer_pings(C) ->
    {ok, A, NA} = cnb_cluster:start_node(C, #{name => "a"}),
    [begin
         Name = cname(Prefix),
         CN = list_to_atom(Name ++ "@" ++ cnb_cluster:hostname()),
         %% The peer starts pinging before the C node exists.
         Pinger = cnb_cluster:call(A, ?MODULE, ping_until_pong, [CN, 10000]),
         {Port, CN} = cnb_cnode:start(C, ["--sname", Name, "--connect", atom_to_list(NA),
                                  "--log-level", "debug"]),
         ?assertEqual(pong, cnb_cluster:call(A, ?MODULE, await, [Pinger])),
         timer:sleep(300),
         ?assert(hidden_has(A, CN)),
         Out = cnb_cluster:cnode_output(C, Port),
         Ups = length([L || L <- Out, re:run(L, "\\] [^ ]+: connected ") =/= nomatch]),
         Downs = length([L || L <- Out, re:run(L, "(?<!not up\\)) closed") =/= nomatch,
                              re:run(L, "\\(not up\\)") =:= nomatch]),
         {ok, _} = cnb_cluster:stop_cnode(C, Port),
         ?assertEqual(1, Ups - Downs)
     end || Prefix <- ["s", "B", "s", "B"]],
    ok.

%% --connect nodes are kept: connected at start, and reconnected (with
%% back-off) when the connection is lost or the node comes back.
reconnects_to_connect_nodes(C) ->
    {ok, A, NA} = cnb_cluster:start_node(C, #{name => "a"}),
    {ok, B, NB} = cnb_cluster:start_node(C, #{name => "b"}),
    {Port, CN} = cnb_cnode:start(C, ["--sname", cname("c"), "--connect", atom_to_list(NA),
                             "--connect", atom_to_list(NB)]),
    ?assert(cnb_cluster:wait_until(fun() -> hidden_has(A, CN) andalso hidden_has(B, CN) end, 5000)),
    true = cnb_cluster:call(A, erlang, disconnect_node, [CN]),
    T0 = erlang:monotonic_time(millisecond),
    ?assert(cnb_cluster:wait_until(fun() -> hidden_has(A, CN) end, 5000)),
    ?debugFmt("reconnected ~b ms after the peer dropped the connection",
              [erlang:monotonic_time(millisecond) - T0]),
    %% B goes away and a new node of the same name comes up: reconnected too.
    ok = cnb_cluster:stop_node(C, B),
    ?assert(cnb_cluster:wait_until(
              fun() -> lists:any(fun(L) -> re:run(L, "cannot|closed") =/= nomatch end,
                                 cnb_cluster:cnode_output(C, Port)) end, 5000)),
    ?assert(hidden_has(A, CN)).

bad_flags_exit_2(_C) ->
    Exe = filename:join([cnb_cluster:root(), "erlang_side", "priv", "cnode"]),
    [begin
         P = open_port({spawn_executable, Exe}, [{args, Args}, exit_status, stderr_to_stdout]),
         Status = receive {P, {exit_status, S}} -> S after 5000 -> timeout end,
         ?assertEqual({Args, 2}, {Args, Status})
     end || Args <- [[], ["--bogus"], ["--sname", "x", "--name", "y@h"],
                     ["--sname", "x", "--port", "99999"], ["--sname", "x", "--log-level", "loud"],
                     ["--sname", "x", "extra"]]],
    ok.

%%% ------------------------------------------------------------------ run on peers

echo_pid(CN) ->
    {echo, CN} ! {ping, self()},
    receive {pong, P} -> P after 5000 -> error(no_pong) end.

ping_pid(Pid) ->
    Pid ! {ping, self()},
    receive {pong, _} -> pong after 1000 -> timeout end.

%% peer:call runs each call in a process of its own, so the result waits in
%% the pinger until await/1 asks for it.
ping_until_pong(Node, Ms) ->
    Deadline = erlang:monotonic_time(millisecond) + Ms,
    spawn(fun() ->
                  R = ping_loop(Node, Deadline),
                  receive {get, From} -> From ! {self(), R} end
          end).

ping_loop(Node, Deadline) ->
    case net_adm:ping(Node) of
        pong -> pong;
        pang ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> pang;
                false -> timer:sleep(1), ping_loop(Node, Deadline)
            end
    end.

await(Pid) ->
    Pid ! {get, self()},
    receive {Pid, R} -> R after 15000 -> timeout end.

echo_check(CN, Size) ->
    Big = {big, crypto:strong_rand_bytes(Size), lists:seq(1, 1000)},
    Big =:= gen_server:call({echo, CN}, Big, 30000).

monitor_reason(Pid) ->
    Ref = erlang:monitor(process, Pid),
    receive {'DOWN', Ref, process, _, R} -> R after 5000 -> timeout end.
