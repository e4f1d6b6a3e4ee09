%% Integration tests of authentication and logging against hostile peers
%% (issue 13): bad node names in the handshake refused with one escaped log
%% line and no forged logger event on the supervising BEAM; wrong-cookie
%% guesses held back per address while other addresses connect; the cookie
%% kept out of /proc/PID/cmdline and environ; bad cookie files refused;
%% --listen binding one interface. The client here speaks the distribution
%% handshake itself (gen_tcp), from chosen loopback source addresses.
-module(hostile_auth_tests).
-include_lib("eunit/include/eunit.hrl").

-define(T(Name, Secs), {atom_to_list(Name), {timeout, Secs, fun() -> with_cluster(fun Name/1) end}}).

%% The flags a peer must offer (cnode/handshake.h, CNB_DFLAGS_REQUIRED).
-define(FLAGS, (16#4 bor 16#10 bor 16#80 bor 16#100 bor 16#200 bor 16#400 bor 16#800 bor
                16#10000 bor 16#20000 bor 16#40000 bor 16#800000 bor 16#1000000)).

%% The back-off schedule of cnode/auth_limit.h.
-define(FREE, 3).
-define(BASE_MS, 200).
-define(MAX_MS, 10000).

hostile_auth_test_() ->
    [?T(bad_names_refused_and_escaped, 90),
     ?T(wrong_cookie_guesses_back_off, 120),
     ?T(parallel_guesses_not_answered, 60),
     ?T(cookie_not_in_cmdline_or_environ, 60),
     ?T(launcher_hides_cookie, 60),
     ?T(bad_cookie_files_exit_2, 60),
     ?T(listen_binds_one_interface, 60),
     ?T(launcher_listen_option, 60)].

with_cluster(F) -> cnb_cluster:with(F).

cname(Prefix) -> cnb_cluster:unique_name(Prefix).

output(C, Port) -> cnb_cluster:cnode_output(C, Port).

app_node(C) ->
    {ok, A, _} = cnb_cluster:start_node(C, #{name => "app"}),
    ok = cnb_cluster:call(A, supervision_tests, setup_app, []),
    A.

%%% ------------------------------------------------------------------ the client

digest(Challenge, Cookie) -> erlang:md5([Cookie, integer_to_list(Challenge)]).

%% One handshake as the initiator, from source address Src to 127.0.0.1:Port.
%% Returns refused (closed before any status), {status, S} (a status other
%% than ok), or, once our challenge reply was answered, {Result, TChallenge,
%% TReply}: Result is rejected (closed without an acknowledgement) or
%% authenticated (acknowledged with the right digest); the times (ms) are when
%% the node's challenge arrived and when our reply left.
handshake(Src, Port, Name, Cookie) ->
    case hs_open(Src, Port, Name) of
        {ok, S, Ch, TChallenge} ->
            try hs_reply(S, Ch, Cookie, TChallenge)
            after gen_tcp:close(S)
            end;
        Other -> Other
    end.

%% Connects and sends send_name; returns {ok, Socket, Challenge, TChallenge}
%% once the node sent status ok and its challenge, else as handshake/4.
hs_open(Src, Port, Name) ->
    case gen_tcp:connect({127, 0, 0, 1}, Port,
                         [binary, {packet, 2}, {active, false}, {ip, Src}], 5000) of
        {error, R} -> {connect_error, R};
        {ok, S} ->
            Send = gen_tcp:send(S, <<$N, ?FLAGS:64, 1:32, (byte_size(Name)):16, Name/binary>>),
            R = case Send =:= ok andalso gen_tcp:recv(S, 0, 5000) of
                    {ok, <<$s, "ok">>} ->
                        case gen_tcp:recv(S, 0, 5000) of
                            {ok, <<$N, _Flags:64, Ch:32, _Cr:32, NL:16, _Peer:NL/binary,
                                   _/binary>>} -> {ok, S, Ch, now_ms()};
                            Other -> {unexpected, Other}
                        end;
                    {ok, <<$s, St/binary>>} -> {status, St};
                    {ok, Other} -> {unexpected, Other};
                    _ -> refused
                end,
            case R of
                {ok, _, _, _} -> R;
                _ -> gen_tcp:close(S), R
            end
    end.

%% Sends the challenge reply for Cookie and reads the answer.
hs_reply(S, Ch, Cookie, TChallenge) ->
    Mine = rand:uniform(16#7fffffff),
    ok = gen_tcp:send(S, <<$r, Mine:32, (digest(Ch, Cookie))/binary>>),
    TReply = now_ms(),
    Res = case gen_tcp:recv(S, 0, 5000) of
              {ok, <<$a, D:16/binary>>} ->
                  case D =:= digest(Mine, Cookie) of
                      true -> authenticated;
                      false -> bad_ack
                  end;
              {error, _} -> rejected;
              Other -> {unexpected, Other}
          end,
    {Res, TChallenge, TReply}.

result({R, _, _}) -> R;
result(R) -> R.

now_ms() -> erlang:monotonic_time(millisecond).

backoff(F) when F =< ?FREE -> 0;
backoff(F) -> min(?MAX_MS, ?BASE_MS bsl (F - ?FREE - 1)).

%%% ------------------------------------------------------------------ tests

%% Names a real node cannot have are refused before any status; the line
%% saying so shows them escaped, so the supervising BEAM (which turns each
%% line of the C node into a logger event) gets no event the peer wrote.
bad_names_refused_and_escaped(C) ->
    A = app_node(C),
    Cap = cnb_cluster:call(A, cnb_log_capture, install, []),
    TcpPort = cnb_cluster:free_port(),
    {ok, CN} = cnb_cluster:call(A, cnode_bridge, start_cnode, [list_to_atom(cname("c")),
                                                                #{port => TcpPort}]),
    Host = list_to_binary(cnb_cluster:hostname()),
    Cookie = cnb_cluster:cookie(C),
    Bad = [<<"evil\n2026-12-01T00:00:00.000Z [error] forger@", Host/binary,
             ": FORGED one\n@", Host/binary>>,
           <<"\e[2J\e[31mred\r2026-12-01T00:00:00.000Z [error] x: FORGED two@", Host/binary>>,
           <<"noat">>,
           <<"a b@", Host/binary>>,
           <<"a@b@", Host/binary>>],
    [?assertEqual({N, refused}, {N, result(handshake({127, 0, 0, 1}, TcpPort, N, Cookie))})
     || N <- Bad],
    Events = fun() -> cnb_cluster:call(A, cnb_log_capture, collect, [Cap, CN]) end,
    Refusals = fun() -> [T || {_, T} <- Events(), binary:match(T, <<"bad node name">>) =/= nomatch] end,
    ?assert(cnb_cluster:wait_until(fun() -> length(Refusals()) >= length(Bad) end, 10000)),
    All = Events(),
    ?assertEqual([], [E || {_, T} = E <- All, binary:match(T, <<"FORGED">>) =/= nomatch,
                           binary:match(T, <<"bad node name">>) =:= nomatch]),
    ?assertEqual([], [E || {_, T} = E <- All, re:run(T, "[\\x00-\\x1f\\x7f]") =/= nomatch]),
    [R1, R2 | _] = Refusals(),
    ?assertNotEqual(nomatch, binary:match(R1, <<"evil\\n2026-12-01T00:00:00.000Z [error]">>)),
    ?assertNotEqual(nomatch, binary:match(R2, <<"\\x1b[2J\\x1b[31mred\\r2026">>)),
    %% A good name still connects.
    ?assertEqual(authenticated,
                 result(handshake({127, 0, 0, 1}, TcpPort, <<"good@", Host/binary>>, Cookie))).

%% 1,000 wrong-cookie guesses from one address, one every 2 ms or so (long
%% enough for the back-off to double a few times): after the free failures
%% each guess waits out a back-off that doubles, so few are checked at all; meanwhile a client with the right cookie from
%% another address connects, and the blocked address gets in once its
%% back-off is over. The flood of refusals is rate limited in the log.
wrong_cookie_guesses_back_off(C) ->
    TcpPort = cnb_cluster:free_port(),
    {Port, _CN} = cnb_cnode:start(C, ["--sname", cname("c"), "--port", integer_to_list(TcpPort)]),
    Host = cnb_cluster:hostname(),
    Cookie = cnb_cluster:cookie(C),
    Name = fun(P, I) -> list_to_binary(P ++ integer_to_list(I) ++ "@" ++ Host) end,
    T0 = now_ms(),
    Results = [begin
                   timer:sleep(2),
                   handshake({127, 0, 0, 1}, TcpPort, Name("guess", I), "wrong")
               end || I <- lists:seq(1, 1000)],
    Elapsed = now_ms() - T0,
    Checked = [{TC, TR} || {rejected, TC, TR} <- Results],
    Refused = [R || refused = R <- Results],
    ?debugFmt("1000 wrong-cookie guesses in ~b ms: ~b checked, ~b refused at accept",
              [Elapsed, length(Checked), length(Refused)]),
    ?assertEqual(1000, length(Checked) + length(Refused)),
    ?assert(length(Checked) > ?FREE),
    %% Every guess after the free ones came no sooner than the back-off the
    %% previous failure started (1 ms for the clocks' rounding).
    Gaps = lists:zip(lists:seq(1, length(Checked) - 1),
                     lists:zip(lists:droplast(Checked), tl(Checked))),
    [?assert(TC2 - TR1 >= backoff(F) - 1) || {F, {{_, TR1}, {TC2, _}}} <- Gaps],
    MinTotal = lists:sum([backoff(F) || F <- lists:seq(1, length(Checked) - 1)]),
    ?assert(Elapsed >= MinTotal),
    ?assert(length(Checked) < 50),
    %% Another address is not held back.
    ?assertEqual(authenticated, result(handshake({127, 0, 0, 2}, TcpPort, Name("good", 1), Cookie))),
    %% The guessing address is let in again once its back-off is over.
    ?assert(cnb_cluster:wait_until(
              fun() ->
                      authenticated =:= result(handshake({127, 0, 0, 1}, TcpPort,
                                                         Name("good", 2), Cookie))
              end, ?MAX_MS + 5000)),
    cnb_cnode:wait_line(C, Port, "refused a connection from 127\\.0\\.0\\.1: [0-9]+ failed cookie checks"),
    cnb_cnode:wait_line(C, Port, "suppressed [0-9]+ similar lines"),
    Lines = length(output(C, Port)),
    Secs = (now_ms() - T0) div 1000 + 1,
    ?debugFmt("~b log lines for the 1000 guesses in ~b s", [Lines, Secs]),
    %% The log's rate limit (20 lines and one "suppressed" line a second per
    %% call site; up to three sites log here) bounds the lines by time, not
    %% by guesses: a slow (loaded) run may log more, a flood (a line per
    %% guess) fails.
    ?assert(Lines < 60 + 3 * 21 * Secs),
    ?assert(Lines < 1000).

%% Handshakes opened before the address failed (so past the check at accept)
%% do not let a guesser test many cookies at once: once the address is in its
%% back-off, even the right digest gets no acknowledgement.
parallel_guesses_not_answered(C) ->
    TcpPort = cnb_cluster:free_port(),
    {Port, _} = cnb_cnode:start(C, ["--sname", cname("c"), "--port", integer_to_list(TcpPort)]),
    Host = cnb_cluster:hostname(),
    Opened = [hs_open({127, 0, 0, 3}, TcpPort, list_to_binary("p" ++ integer_to_list(I) ++ "@" ++ Host))
              || I <- lists:seq(1, 10)],
    ?assertEqual(lists:duplicate(10, ok), [element(1, O) || O <- Opened]),
    {Wrong, [{ok, Last, Ch, T}]} = lists:split(9, Opened),
    ?assertEqual(lists:duplicate(9, rejected),
                 [element(1, hs_reply(S, X, "wrong", T0)) || {ok, S, X, T0} <- Wrong]),
    ?assertMatch({rejected, _, _}, hs_reply(Last, Ch, cnb_cluster:cookie(C), T)),
    cnb_cnode:wait_line(C, Port, "not answered: the address is in its back-off after [0-9]+ failed"),
    %% Another address with the right cookie is answered.
    ?assertEqual(authenticated,
                 result(handshake({127, 0, 0, 1}, TcpPort, list_to_binary("q@" ++ Host),
                                  cnb_cluster:cookie(C)))),
    [gen_tcp:close(S) || {ok, S, _, _} <- Opened].

%% --cookie is wiped from the command line at start; CNB_COOKIE works and is
%% wiped from the environment.
cookie_not_in_cmdline_or_environ(C) ->
    Cookie = cnb_cluster:cookie(C),
    Host = cnb_cluster:hostname(),
    {Port, _} = cnb_cnode:start(C, ["--sname", cname("c")]),
    OsPid = integer_to_list(cnb_cluster:cnode_os_pid(C, Port)),
    {ok, Cmdline} = file:read_file("/proc/" ++ OsPid ++ "/cmdline"),
    ?assertNotEqual(nomatch, binary:match(Cmdline, <<"--cookie">>)),
    ?assertEqual(nomatch, binary:match(Cmdline, list_to_binary(Cookie))),
    TcpPort = cnb_cluster:free_port(),
    EnvCookie = cname("envcookie"),
    {ok, Port2, _} = cnb_cluster:start_cnode(
                       C, {["--sname", cname("c"), "--port", integer_to_list(TcpPort)],
                           #{env => [{"CNB_COOKIE", EnvCookie}]}}),
    OsPid2 = integer_to_list(cnb_cluster:cnode_os_pid(C, Port2)),
    {ok, Environ} = file:read_file("/proc/" ++ OsPid2 ++ "/environ"),
    ?assertEqual(nomatch, binary:match(Environ, list_to_binary(EnvCookie))),
    Good = list_to_binary("good@" ++ Host),
    ?assertEqual(authenticated, result(handshake({127, 0, 0, 1}, TcpPort, Good, EnvCookie))).

%% The OTP application's launcher: the cookie reaches the program (calls
%% work) and shows neither in its command line nor in its environment.
launcher_hides_cookie(C) ->
    A = app_node(C),
    {ok, CN} = cnb_cluster:call(A, cnode_bridge, start_cnode, [list_to_atom(cname("s")),
                                                                #{demo => true}]),
    ?assertEqual(hi, cnb_cluster:call(A, gen_server, call, [{echo, CN}, hi])),
    OsPid = integer_to_list(cnb_cluster:call(A, cnode_bridge, os_pid, [CN])),
    Cookie = list_to_binary(cnb_cluster:cookie(C)),
    [begin
         {ok, Bin} = file:read_file("/proc/" ++ OsPid ++ "/" ++ F),
         ?assertEqual({F, nomatch}, {F, binary:match(Bin, Cookie)})
     end || F <- ["cmdline", "environ"]].

%% Cookie files erl would refuse are refused: exit status 2 and a line that
%% says why. A good file next to them works.
bad_cookie_files_exit_2(C) ->
    Dir = filename:join(cnb_cluster:root(), "build/test-cookies-" ++ os:getpid()),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    try
        Cases = [{"open", <<"secret\n">>, 8#644, "mode 0644 lets others read"},
                 {"group", <<"secret\n">>, 8#640, "mode 0640 lets others read"},
                 {"empty", <<>>, 8#600, "the cookie in it is empty"},
                 {"blank", <<"\n\n">>, 8#600, "the cookie in it is empty"},
                 {"nul", <<0, "secret">>, 8#600, "it holds a NUL byte"}],
        [begin
             F = filename:join(Dir, Name),
             ok = file:write_file(F, Text),
             ok = file:change_mode(F, Mode),
             {ok, P, _} = cnb_cluster:start_cnode(
                            C, {["--sname", cname("c"), "--cookie-file", F],
                                #{wait_ready => false}}),
             ?assertEqual({Name, {ok, 2}}, {Name, cnb_cluster:wait_cnode_exit(C, P, 10000)}),
             ?assert(cnb_cnode:has_line(C, P, "refused the cookie file .*" ++ Why))
         end || {Name, Text, Mode, Why} <- Cases],
        Good = filename:join(Dir, "good"),
        ok = file:write_file(Good, cnb_cluster:cookie(C) ++ "\n"),
        ok = file:change_mode(Good, 8#400),
        {ok, _, CN} = cnb_cluster:start_cnode(C, ["--sname", cname("c"), "--cookie-file", Good]),
        {ok, Peer, _} = cnb_cluster:start_node(C, #{name => "a"}),
        ?assertEqual(pong, cnb_cluster:call(Peer, net_adm, ping, [CN]))
    after
        _ = os:cmd("rm -rf '" ++ Dir ++ "'")
    end.

%% Addresses of this host other than 127.0.0.1 to try: a second loopback
%% address and every non-loopback IPv4 address.
other_addresses() ->
    {ok, Ifs} = inet:getifaddrs(),
    Own = [A || {_, Opts} <- Ifs, {addr, A = {_, _, _, _}} <- Opts, A =/= {127, 0, 0, 1}],
    lists:usort([{127, 0, 0, 2} | Own]).

reachable(Addr, TcpPort) ->
    case gen_tcp:connect(Addr, TcpPort, [binary], 2000) of
        {ok, S} -> gen_tcp:close(S), true;
        {error, _} -> false
    end.

listen_binds_one_interface(C) ->
    Others = other_addresses(),
    %% Without --listen every address reaches the node: the check below can
    %% see the difference.
    Open = cnb_cluster:free_port(),
    cnb_cnode:start(C, ["--sname", cname("c"), "--port", integer_to_list(Open)]),
    ?assertEqual([{A, true} || A <- Others], [{A, reachable(A, Open)} || A <- Others]),
    TcpPort = cnb_cluster:free_port(),
    {Port, _} = cnb_cnode:start(C, ["--sname", cname("c"), "--port", integer_to_list(TcpPort),
                            "--listen", "127.0.0.1"]),
    ?assertEqual([{A, false} || A <- Others], [{A, reachable(A, TcpPort)} || A <- Others]),
    ?assert(reachable({127, 0, 0, 1}, TcpPort)),
    Good = list_to_binary("good@" ++ cnb_cluster:hostname()),
    ?assertEqual(authenticated,
                 result(handshake({127, 0, 0, 1}, TcpPort, Good, cnb_cluster:cookie(C)))),
    cnb_cnode:wait_line(C, Port, "listening on port [0-9]+ of 127\\.0\\.0\\.1"),
    %% Not an address: refused at start with status 2.
    {ok, Bad, _} = cnb_cluster:start_cnode(
                     C, {["--sname", cname("c"), "--cookie", "x", "--listen", "localhost"],
                         #{wait_ready => false}}),
    ?assertEqual({ok, 2}, cnb_cluster:wait_cnode_exit(C, Bad, 10000)),
    ?assert(cnb_cnode:has_line(C, Bad, "bad listen address 'localhost'")).

%% The launcher's listen option, as inet_dist_use_interface: the address this
%% host's name resolves to (so BEAM nodes still reach the C node by name).
launcher_listen_option(C) ->
    A = app_node(C),
    {ok, Ip} = inet:getaddr(cnb_cluster:hostname(), inet),
    TcpPort = cnb_cluster:free_port(),
    ?assertEqual({error, {bad_option, {listen, "nowhere"}}},
                 cnb_cluster:call(A, cnode_bridge, start_cnode,
                                  [list_to_atom(cname("s")), #{listen => "nowhere"}])),
    {ok, CN} = cnb_cluster:call(A, cnode_bridge, start_cnode,
                                [list_to_atom(cname("s")),
                                 #{demo => true, listen => Ip, port => TcpPort}]),
    ?assertEqual(hi, cnb_cluster:call(A, gen_server, call, [{echo, CN}, hi])),
    Others = [X || X <- other_addresses(), X =/= Ip],
    ?assertEqual([{X, false} || X <- Others], [{X, reachable(X, TcpPort)} || X <- Others]),
    ?assert(reachable(Ip, TcpPort)).
