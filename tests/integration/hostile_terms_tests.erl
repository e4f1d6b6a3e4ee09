%% Hostile wire input (issue 13) against the real cnode program: terms nested
%% 200,000 deep (BEAM makes and sends them happily) as a gen_server:call, a
%% plain send, a message to the node's net_kernel, an exit reason, and inside
%% link and monitor signals; and a client that completes a real handshake
%% (with the cookie) and then opens thousands of fragmented messages it never
%% completes, or lets one stall. Each time the C node stays up, logs one line,
%% and a following normal call works.
-module(hostile_terms_tests).
-include_lib("eunit/include/eunit.hrl").

%% Run on the peer node (the deep terms are made there and never cross the
%% peer's stdio).
-export([call_deep/3, send_deep/3, exit_deep/2, linked_exit_deep/2, monitored_exit_deep/2]).

-define(DEPTH, 200000).
-define(DEEP_LINE, "nested deeper than 1000 levels").

%%% ------------------------------------------------------------------ deep terms

deep_terms_test_() ->
    {setup, fun setup_deep/0, fun cleanup/1,
     fun(Env) ->
             {inorder,
              [{Name, {timeout, 60, fun() -> F(Env) end}}
               || {Name, F} <- [{"call_deep_list", fun call_deep_list/1},
                                {"call_deep_tuple", fun call_deep_tuple/1},
                                {"call_deep_map", fun call_deep_map/1},
                                {"registry_call_deep_key", fun registry_call_deep_key/1},
                                {"send_deep_message", fun send_deep_message/1},
                                {"cast_deep_request", fun cast_deep_request/1},
                                {"net_kernel_deep_tag", fun net_kernel_deep_tag/1},
                                {"exit_deep_reason", fun exit_deep_reason/1},
                                {"link_deep_reason", fun link_deep_reason/1},
                                {"monitor_deep_reason", fun monitor_deep_reason/1}]]}
     end}.

setup_deep() ->
    C = cnb_cluster:new(),
    {ok, A, _} = cnb_cluster:start_node(C, #{name => "a"}),
    {ok, Port, CN} = cnb_cluster:start_cnode(
                       C, ["--cookie", cnb_cluster:cookie(C),
                           "--sname", cnb_cluster:unique_name("c"), "--demo"]),
    ?assertEqual(hello, cnb_cluster:call(A, gen_server, call, [{echo, CN}, hello])),
    #{ctx => C, peer => A, port => Port, cnode => CN}.

cleanup(#{ctx := C}) -> cnb_cluster:stop(C).

%% Runs Act (which makes the C node meet a deep term), then checks: the C node
%% is up, exactly one new log line matches Re, and a normal call works.
survives(#{ctx := C, peer := A, port := Port, cnode := CN}, Re, Act) ->
    Before = cnb_cnode:count_lines(C, Port, Re),
    Result = Act(),
    ok = expect_one_line(C, Port, Re, Before),
    ?assert(cnb_cluster:cnode_alive(C, Port)),
    ?assertEqual(after_it, cnb_cluster:call(A, gen_server, call, [{echo, CN}, after_it])),
    Result.

call_deep_list(Env) -> deep_call(Env, list).
call_deep_tuple(Env) -> deep_call(Env, tuple).
call_deep_map(Env) -> deep_call(Env, map).

%% gen_server:call with a deep request: the message is dropped, so the caller
%% times out (it used to get noconnection: the C node died).
deep_call(#{peer := A, cnode := CN} = Env, Kind) ->
    R = survives(Env, ?DEEP_LINE,
                 fun() -> cnb_cluster:call(A, ?MODULE, call_deep, [{echo, CN}, bare, Kind]) end),
    ?assertEqual(timeout, R).

%% The registry worker's requests take the same path: {lookup, DeepKey}.
registry_call_deep_key(#{peer := A, cnode := CN} = Env) ->
    R = survives(Env, ?DEEP_LINE,
                 fun() ->
                         cnb_cluster:call(A, ?MODULE, call_deep, [{cnode_registry, CN}, lookup, map])
                 end),
    ?assertEqual(timeout, R).

send_deep_message(#{peer := A, cnode := CN} = Env) ->
    survives(Env, ?DEEP_LINE,
             fun() -> cnb_cluster:call(A, ?MODULE, send_deep, [{echo, CN}, plain, list]) end).

cast_deep_request(#{peer := A, cnode := CN} = Env) ->
    survives(Env, ?DEEP_LINE,
             fun() -> cnb_cluster:call(A, ?MODULE, send_deep, [{echo, CN}, cast, tuple]) end).

%% The node's own net_kernel "process" decodes calls on the I/O thread.
net_kernel_deep_tag(#{peer := A, cnode := CN} = Env) ->
    survives(Env, ?DEEP_LINE,
             fun() -> cnb_cluster:call(A, ?MODULE, send_deep, [{net_kernel, CN}, tag, list]) end).

%% exit(CPid, Deep): the worker still dies (the signal takes effect), with the
%% reason term_too_deep, which its monitor sees.
exit_deep_reason(#{peer := A, cnode := CN} = Env) ->
    R = survives(Env, "exit reason .* nested deeper than 1000 levels: delivered as term_too_deep",
                 fun() -> cnb_cluster:call(A, ?MODULE, exit_deep, [CN, map]) end),
    ?assertEqual({down, term_too_deep}, R).

%% A linked Erlang process exits with a deep reason: the C worker (trapping
%% exits) gets {'EXIT', Pid, term_too_deep}.
link_deep_reason(#{peer := A, cnode := CN} = Env) ->
    R = survives(Env, "exit reason .* nested deeper than 1000 levels: delivered as term_too_deep",
                 fun() -> cnb_cluster:call(A, ?MODULE, linked_exit_deep, [CN, list]) end),
    ?assertEqual({'EXIT', term_too_deep}, R).

%% A monitored Erlang process exits with a deep reason: the C worker gets
%% {'DOWN', Ref, process, Pid, term_too_deep}.
monitor_deep_reason(#{peer := A, cnode := CN} = Env) ->
    R = survives(Env, "exit reason .* nested deeper than 1000 levels: delivered as term_too_deep",
                 fun() -> cnb_cluster:call(A, ?MODULE, monitored_exit_deep, [CN, tuple]) end),
    ?assertEqual({'DOWN', term_too_deep}, R).

%%% ------------------------------------------------------------------ on the peer

deep(Kind) -> lists:foldl(fun(_, Acc) -> wrap(Kind, Acc) end, leaf, lists:seq(1, ?DEPTH)).

wrap(list, X) -> [X];
wrap(tuple, X) -> {X};
wrap(map, X) -> #{k => X}.

%% A term that cannot cross the peer's stdio when deep is summarised.
summary(R) when is_atom(R) -> R;
summary(_) -> deep_term.

-spec call_deep(term(), bare | lookup, atom()) -> term().
call_deep(To, Wrap, Kind) ->
    Req = case Wrap of
              bare -> deep(Kind);
              lookup -> {lookup, deep(Kind)}
          end,
    try gen_server:call(To, Req, 3000) of
        R -> {reply, summary(R)}
    catch
        exit:{timeout, _} -> timeout;
        exit:{Reason, _} -> {exit, summary(Reason)}
    end.

-spec send_deep(term(), atom(), atom()) -> ok.
send_deep(To, plain, Kind) -> To ! deep(Kind), ok;
send_deep(To, cast, Kind) -> To ! {'$gen_cast', deep(Kind)}, ok;
send_deep(To, tag, Kind) -> To ! {'$gen_call', {self(), deep(Kind)}, {is_auth, node()}}, ok.

%% A new probe worker on the C node that forwards what it gets to us.
probe(CN) ->
    {ok, P} = gen_server:call({probe, CN}, spawn),
    ok = gen_server:call(P, {subscribe, self()}),
    P.

%% An Erlang process that exits with a deep reason when told.
doomed(Kind) -> spawn(fun() -> receive go -> exit(deep(Kind)) end end).

-spec exit_deep(node(), atom()) -> term().
exit_deep(CN, Kind) ->
    P = probe(CN),
    Ref = monitor(process, P),
    exit(P, deep(Kind)),
    receive {'DOWN', Ref, process, P, R} -> {down, summary(R)}
    after 10000 -> no_down
    end.

-spec linked_exit_deep(node(), atom()) -> term().
linked_exit_deep(CN, Kind) ->
    P = probe(CN),
    ok = gen_server:call(P, {trap_exit, true}),
    E = doomed(Kind),
    ok = gen_server:call(P, {link, E}),
    E ! go,
    receive {probe_info, P, {'EXIT', E, R}} -> {'EXIT', summary(R)}
    after 10000 -> no_exit
    end.

-spec monitored_exit_deep(node(), atom()) -> term().
monitored_exit_deep(CN, Kind) ->
    P = probe(CN),
    E = doomed(Kind),
    {ok, Ref} = gen_server:call(P, {monitor, E}),
    E ! go,
    receive {probe_info, P, {'DOWN', Ref, process, E, R}} -> {'DOWN', summary(R)}
    after 10000 -> no_down
    end.

%%% ------------------------------------------------------------------ fragments

-define(T(Name, Secs), {atom_to_list(Name), {timeout, Secs, fun() -> with_cluster(fun Name/1) end}}).

fragments_test_() ->
    [?T(fragments_bytes_capped, 120),
     ?T(fragments_count_capped, 120),
     ?T(fragment_stall_times_out, 60)].

with_cluster(F) -> cnb_cluster:with(F).

%% A C node listening on a known port, and an Erlang node that checks it.
start_c(C, Extra) ->
    {ok, A, _} = cnb_cluster:start_node(C, #{name => "a"}),
    TcpPort = cnb_cluster:free_port(),
    {Port, CN} = cnb_cnode:start(C, ["--sname", cnb_cluster:unique_name("c"), "--demo",
                                     "--port", integer_to_list(TcpPort) | Extra]),
    ?assertEqual(ok, cnb_cluster:call(A, gen_server, call, [{echo, CN}, ok])),
    {A, Port, CN, TcpPort}.

rss_kb(OsPid) ->
    {ok, S} = file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/status"),
    {match, [Kb]} = re:run(S, "VmRSS:\\s+(\\d+) kB", [{capture, all_but_first, list}]),
    list_to_integer(Kb).

%% 3,000 fragmented messages of 32 KB each (96 MB), none completed, with
%% --max-message 4 MB: the C node used to hold all of it; now the connection
%% closes once the incomplete ones would hold more than 4 MB, its RSS stays
%% bounded, and other nodes are served.
fragments_bytes_capped(C) ->
    {A, Port, CN, TcpPort} = start_c(C, ["--max-message", "4000000"]),
    OsPid = cnb_cluster:cnode_os_pid(C, Port),
    Rss0 = rss_kb(OsPid),
    S = dist_connect(TcpPort, cnb_cluster:cookie(C)),
    Chunk = binary:copy(<<7>>, 32768),
    {Sent, Failed} = open_fragments(S, 3000, Chunk),
    ?assert(Failed orelse closed(S, 3000)),
    ?assert(Sent < 3000),
    Line = "incomplete fragmented message\\(s\\) would hold more than the limit of 4000000 bytes",
    ok = expect_one_line(C, Port, Line),
    Rss1 = rss_kb(OsPid),
    ?assert(Rss1 - Rss0 < 32 * 1024),
    ?assert(cnb_cluster:cnode_alive(C, Port)),
    ?assertEqual(ok, cnb_cluster:call(A, gen_server, call, [{echo, CN}, ok])).

%% 2,000 small incomplete sequences: the count cap closes the connection, with
%% a line that says so (it used to speak of a byte limit).
fragments_count_capped(C) ->
    {A, Port, CN, TcpPort} = start_c(C, []),
    S = dist_connect(TcpPort, cnb_cluster:cookie(C)),
    {_Sent, Failed} = open_fragments(S, 2000, <<"x">>),
    ?assert(Failed orelse closed(S, 3000)),
    ok = expect_one_line(C, Port, "more than 1024 incomplete fragmented messages at once"),
    ?assertEqual(0, cnb_cnode:count_lines(C, Port, "exceeds the limit")),
    ?assert(cnb_cluster:cnode_alive(C, Port)),
    ?assertEqual(ok, cnb_cluster:call(A, gen_server, call, [{echo, CN}, ok])).

%% Three sequences started and never continued while the connection itself
%% stays alive (ticks): closed after net_ticktime (2 s here).
fragment_stall_times_out(C) ->
    {A, Port, CN, TcpPort} = start_c(C, ["--ticktime", "2"]),
    S = dist_connect(TcpPort, cnb_cluster:cookie(C)),
    {3, false} = open_fragments(S, 3, <<"abc">>),
    Closed = tick_until_closed(S, erlang:monotonic_time(millisecond) + 8000),
    ?assert(Closed),
    %% "K of 3": the three may straddle a timer tick of the C node.
    ok = expect_one_line(C, Port, "[123] of 3 incomplete fragmented message\\(s\\) got no "
                                  "fragment for 2000 ms"),
    ?assert(cnb_cluster:cnode_alive(C, Port)),
    ?assertEqual(ok, cnb_cluster:call(A, gen_server, call, [{echo, CN}, ok])).

%% Waits for a log line matching Re beyond the Before there were; fails, with
%% the log and whether the C node is alive, unless exactly one more came.
expect_one_line(C, Port, Re) -> expect_one_line(C, Port, Re, 0).

expect_one_line(C, Port, Re, Before) ->
    _ = cnb_cluster:wait_until(fun() -> cnb_cnode:count_lines(C, Port, Re) > Before end, 10000),
    timer:sleep(300), %% a second line, were there one, would be written by now
    case cnb_cnode:count_lines(C, Port, Re) - Before of
        1 -> ok;
        N -> erlang:error({log_lines, Re, N, {cnode_alive, cnb_cluster:cnode_alive(C, Port)},
                           cnb_cluster:cnode_output(C, Port)})
    end.

%% Sends first fragments (of 2) for sequences 1..N until the socket closes.
%% Returns {SequencesSent, SendFailed}.
open_fragments(S, N, Data) -> open_fragments(S, N, Data, 1).

open_fragments(_S, N, _Data, I) when I > N -> {N, false};
open_fragments(S, N, Data, I) ->
    case gen_tcp:send(S, <<131, 69, I:64, 2:64, 0, Data/binary>>) of
        ok -> open_fragments(S, N, Data, I + 1);
        {error, _} -> {I - 1, true}
    end.

%% Whether the peer closed S (reading and dropping its ticks meanwhile).
closed(S, Wait) ->
    case gen_tcp:recv(S, 0, Wait) of
        {ok, _} -> closed(S, Wait);
        {error, timeout} -> false;
        {error, _} -> true
    end.

tick_until_closed(S, Deadline) ->
    case erlang:monotonic_time(millisecond) > Deadline of
        true -> false;
        false ->
            case gen_tcp:send(S, <<>>) =:= ok andalso not closed(S, 300) of
                true -> tick_until_closed(S, Deadline);
                false -> true
            end
    end.

%% A distribution connection to the C node as a hidden node would open it:
%% handshake version 6 with the cookie, then 4-byte packets.
dist_connect(TcpPort, Cookie) ->
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, TcpPort, [binary, {packet, 2}, {active, false}]),
    Name = list_to_binary(cnb_cluster:unique_name("frag") ++ "@" ++ cnb_cluster:hostname()),
    Flags = 16#4 bor 16#8 bor 16#10 bor 16#80 bor 16#100 bor 16#200 bor 16#400 bor 16#800
        bor 16#10000 bor 16#20000 bor 16#40000 bor 16#400000 bor 16#800000 bor 16#1000000
        bor 16#2000000 bor (1 bsl 34) bor (1 bsl 35) bor (1 bsl 36),
    ok = gen_tcp:send(S, <<$N, Flags:64, 1:32, (byte_size(Name)):16, Name/binary>>),
    {ok, <<$s, "ok">>} = gen_tcp:recv(S, 0, 5000),
    {ok, <<$N, _PeerFlags:64, Challenge:32, _Creation:32, _/binary>>} = gen_tcp:recv(S, 0, 5000),
    Ours = 16#12345678,
    Digest = erlang:md5([Cookie, integer_to_list(Challenge)]),
    ok = gen_tcp:send(S, <<$r, Ours:32, Digest/binary>>),
    Want = erlang:md5([Cookie, integer_to_list(Ours)]),
    {ok, <<$a, Want/binary>>} = gen_tcp:recv(S, 0, 5000),
    ok = inet:setopts(S, [{packet, 4}]),
    S.
