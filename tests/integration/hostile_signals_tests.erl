%% Hostile peers and links/monitors (issue 13): one Erlang node floods the real
%% cnode program (--demo) with 100,000 monitors and 50,000 links; echo still
%% answers, removal is O(1), the memory goes back when the peer disconnects;
%% the per-peer cap refuses with system_limit and one log line; and after a
%% peer's disconnect no exit or DOWN is sent back to the node that left.
-module(hostile_signals_tests).
-include_lib("eunit/include/eunit.hrl").

%% Run on the peer nodes.
-export([ask/3, flood/3, linker/2, holder/1, watcher/2, churn_at_cap/3, echo_ping/1]).

%% Overridable (erlc -DMONITORS=N) to measure an older build in less time.
-ifndef(MONITORS).
-define(MONITORS, 100000).
-endif.
-ifndef(LINKS).
-define(LINKS, 50000).
-endif.
-define(T(Name, Secs), {atom_to_list(Name), {timeout, Secs, fun() -> with_cluster(fun Name/1) end}}).

hostile_signals_test_() ->
    [?T(flood_of_monitors_and_links, 600),
     ?T(cap_refuses_with_one_log_line, 120),
     ?T(demonitor_makes_room_in_order, 120),
     ?T(nothing_sent_back_to_a_departed_node, 120)].

with_cluster(F) -> cnb_cluster:with(F).

start_c(C, Extra) ->
    cnb_cnode:start(C, ["--sname", cnb_cluster:unique_name("c"), "--demo" | Extra]).

call(N, M, F, A) -> cnb_cluster:call(N, M, F, A, 120000).

%% gen_server:call with the default 5 s time-out, made on node N.
echo(N, CN, X) -> call(N, gen_server, call, [{echo, CN}, X]).

%% Resident memory of an OS process, in KiB.
rss_kb(OsPid) ->
    {ok, B} = file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/status"),
    {match, [Kb]} = re:run(B, "VmRSS:\\s+(\\d+) kB", [{capture, all_but_first, list}]),
    list_to_integer(Kb).

%% Polls until the RSS is at most Limit KiB or Ms pass; returns the last value.
rss_until(OsPid, Limit, Ms) ->
    R = rss_kb(OsPid),
    if R =< Limit; Ms =< 0 -> R;
       true -> timer:sleep(250), rss_until(OsPid, Limit, Ms - 250)
    end.

%%% --------------------------------------------------------------- peer side
%% The test's own node is not distributed: it reaches processes on a peer
%% through ask/3, run there by peer:call.

%% On the peer: sends {Req, self()} to Pid, returns its {reply, Pid, R}'s R.
ask(Pid, Req, Ms) ->
    Pid ! {Req, self()},
    receive {reply, Pid, R} -> R after Ms -> timeout end.

%% A process that sets NMon monitors on Echo and has NLink trapping linkers
%% link to Target. Asked `ready`, it answers once the C node has taken them
%% all (a call queues behind every signal sent before it on the connection);
%% `demonitor` drops half the monitors; `stop` ends the linkers.
flood(Echo, Target, {NMon, NLink}) ->
    spawn(fun() ->
                  Refs = [erlang:monitor(process, Echo) || _ <- lists:seq(1, NMon)],
                  Me = self(),
                  Ls = [spawn(?MODULE, linker, [Me, Target]) || _ <- lists:seq(1, NLink)],
                  [receive {linked, L} -> ok end || L <- Ls],
                  {sync, 1} = gen_server:call(Echo, {sync, 1}),
                  ok = gen_server:call(Target, {trap_exit, true}),
                  flood_wait(Echo, Refs, Ls)
          end).

flood_wait(Echo, Refs, Ls) ->
    receive
        {ready, From} ->
            From ! {reply, self(), ready},
            flood_wait(Echo, Refs, Ls);
        {demonitor, From} ->
            {Drop, Keep} = lists:split(length(Refs) div 2, Refs),
            [true = erlang:demonitor(R) || R <- Drop],
            {sync, 2} = gen_server:call(Echo, {sync, 2}),
            From ! {reply, self(), ok},
            flood_wait(Echo, Keep, Ls);
        {stop, From} ->
            [exit(L, kill) || L <- Ls],
            From ! {reply, self(), ok}
    end.

linker(Parent, Target) ->
    process_flag(trap_exit, true),
    link(Target),
    Parent ! {linked, self()},
    receive stop -> ok end.

%% A trapping process linked to and monitoring W; keeps every other message
%% and hands them over when asked `dump`: {Ref, Messages}. Returned once the
%% C node has its link and monitor (a call of its own behind them).
holder(W) ->
    Me = self(),
    H = spawn(fun() ->
                      process_flag(trap_exit, true),
                      link(W),
                      R = erlang:monitor(process, W),
                      {ok, _} = gen_server:call(W, get),
                      Me ! {holding, self()},
                      holder_loop(R, [])
              end),
    receive {holding, H} -> H after 10000 -> error(holder_not_ready) end.

holder_loop(R, Acc) ->
    receive
        {dump, From} -> From ! {reply, self(), {R, lists:reverse(Acc)}}, holder_loop(R, Acc);
        M -> holder_loop(R, [M | Acc])
    end.

%% A process with N monitors on W. Asked downs: the DOWN reasons it got,
%% counted, once every DOWN for its monitors has come (echo_ping/1);
%% {demonitor, K}: drops K monitors.
watcher(W, N) ->
    spawn(fun() ->
                  Refs = [erlang:monitor(process, W) || _ <- lists:seq(1, N)],
                  watcher_loop(W, Refs)
          end).

watcher_loop(W, Refs) ->
    receive
        {downs, From} ->
            _ = echo_ping(node(W)),
            From ! {reply, self(), count_reasons(#{})},
            watcher_loop(W, Refs);
        {{demonitor, K}, From} ->
            {Drop, Keep} = lists:split(K, Refs),
            [erlang:demonitor(R, [flush]) || R <- Drop],
            From ! {reply, self(), ok},
            watcher_loop(W, Keep)
    end.

%% A ping to the C node's echo (inline, on its I/O thread); echo's pid. Its
%% pong comes after every DOWN the C node sent for the monitors this process
%% set before it (a refused MONITOR is answered by the I/O thread in wire
%% order, and both travel the same connection). A message, not a call: a
%% call's own monitor would be refused at the cap.
echo_ping(CN) ->
    {echo, CN} ! {ping, self()},
    receive {pong, Echo} -> Echo after 10000 -> error(no_pong) end.

count_reasons(Acc) ->
    receive
        {'DOWN', _, process, _, Why} ->
            count_reasons(maps:update_with(Why, fun(X) -> X + 1 end, 1, Acc))
    after 0 -> Acc
    end.

%%% --------------------------------------------------------------- tests

%% 100k monitors and 50k links from one node: echo answers within the default
%% call time-out, half the monitors go away by demonitor (O(1) each), and
%% after the peer disconnects the cnode's RSS comes back near where it began.
flood_of_monitors_and_links(C) ->
    {ok, B, _} = cnb_cluster:start_node(C, #{name => "b", args => ["+P", "1000000"]}),
    {Port, CN} = start_c(C, []),
    OsPid = cnb_cluster:cnode_os_pid(C, Port),
    {ok, Probe} = call(B, gen_server, call, [{probe, CN}, spawn]),
    ?assertEqual(hi, echo(B, CN, hi)),
    Echo = call(B, ?MODULE, echo_ping, [CN]),
    true = is_pid(Echo),
    Rss0 = rss_kb(OsPid),
    T0 = erlang:monotonic_time(millisecond),
    F = call(B, ?MODULE, flood, [Echo, Probe, {?MONITORS, ?LINKS}]),
    ready = cnb_cluster:call(B, ?MODULE, ask, [F, ready, 300000], 310000),
    T1 = erlang:monotonic_time(millisecond),
    RssPeak = rss_kb(OsPid),
    %% echo answers promptly, from the flooding node and with its records held.
    [?assertEqual({n, I}, echo(B, CN, {n, I})) || I <- lists:seq(1, 20)],
    %% Half the monitors removed one by one.
    ok = call(B, ?MODULE, ask, [F, demonitor, 110000]),
    T2 = erlang:monotonic_time(millisecond),
    ?assertEqual(ok, echo(B, CN, ok)),
    %% The peer goes: every record of it is dropped and the memory returned.
    true = call(B, erlang, disconnect_node, [CN]),
    Slack = max(4096, (RssPeak - Rss0) div 10),
    RssAfter = rss_until(OsPid, Rss0 + Slack, 30000),
    Records = ?MONITORS + ?LINKS,
    io:format(user, "~nflood: ~p monitors + ~p links set in ~p ms, ~p demonitors in ~p ms; "
              "cnode RSS ~p KiB -> ~p KiB (~.1f bytes a record) -> ~p KiB after disconnect~n",
              [?MONITORS, ?LINKS, T1 - T0, ?MONITORS div 2, T2 - T1, Rss0, RssPeak,
               (RssPeak - Rss0) * 1024 / Records, RssAfter]),
    ?assert(RssPeak > Rss0),
    ?assert(RssAfter =< Rss0 + Slack),
    %% The probe trapped the 50k noconnection exits and is still there.
    ?assertEqual(ok, call(B, gen_server, call, [Probe, {trap_exit, true}])),
    ok = call(B, ?MODULE, ask, [F, stop, 60000]).

%% --max-links-per-peer 100: B's 150 monitors get 100 accepted and 50 DOWN
%% system_limit, one log line says so; another node is not affected; once B
%% drops some, new ones are accepted again.
cap_refuses_with_one_log_line(C) ->
    {ok, A, _} = cnb_cluster:start_node(C, #{name => "a"}),
    {ok, B, _} = cnb_cluster:start_node(C, #{name => "b"}),
    {Port, CN} = start_c(C, ["--max-links-per-peer", "100"]),
    {ok, W} = call(A, gen_server, call, [{cache_sup, CN}, {start, 1, x}]),
    P = call(B, ?MODULE, watcher, [W, 150]),
    %% 50 refused, or 51 when B's global_name_server (which monitors every
    %% registered pid, W too) took its slot before the watcher's monitors.
    #{system_limit := Refused} = call(B, ?MODULE, ask, [P, downs, 10000]),
    ?assert(Refused =:= 50 orelse Refused =:= 51),
    %% A link from B past the cap: an exit system_limit.
    ?assertEqual({'EXIT', W, system_limit},
                 call(B, erlang, apply,
                      [fun() -> process_flag(trap_exit, true), link(W),
                                receive {'EXIT', W, _} = E -> E after 5000 -> timeout end
                       end, []])),
    %% A's calls (each sets a monitor) go on; B's are refused too.
    ?assertEqual({ok, x}, call(A, gen_server, call, [W, get])),
    ?assertMatch({'EXIT', {system_limit, _}}, catch call(B, gen_server, call, [W, get])),
    %% B drops 10 of its monitors: there is room again.
    ok = call(B, ?MODULE, ask, [P, {demonitor, 10}, 5000]),
    ?assertEqual({ok, x}, call(B, gen_server, call, [W, get])),
    Out = cnb_cluster:cnode_output(C, Port),
    Lines = [L || L <- Out, re:run(L, "max_links_per_peer") =/= nomatch],
    ?assertMatch([_], Lines),
    ?assertMatch({match, _}, re:run(hd(Lines), atom_to_list(node_of(B)))).

node_of(Peer) -> call(Peer, erlang, node, []).

%% On the peer: fills probe W's cap for this node (Cap monitors, more than
%% the room left; those refused get DOWN system_limit at once); keeps W's
%% thread busy for a second, and meanwhile drops K of the accepted monitors
%% and sets K new ones. Returns whether the cap was reached and the DOWN
%% reasons that came after the burst.
churn_at_cap(W, Cap, K) ->
    Refs = [erlang:monitor(process, W) || _ <- lists:seq(1, Cap)],
    _ = echo_ping(node(W)),
    Refused = [R || R <- Refs, receive {'DOWN', R, process, W, system_limit} -> true
                                after 0 -> false end],
    [Room | Accepted] = Refs -- Refused,
    erlang:demonitor(Room), % room for the busy call's own monitor
    timer:sleep(100),
    Busy = gen_server:send_request(W, {busy, 1000}),
    timer:sleep(200),
    {Drop, _} = lists:split(K, Accepted),
    [erlang:demonitor(R) || R <- Drop],
    _ = [erlang:monitor(process, W) || _ <- lists:seq(1, K)],
    {reply, ok} = gen_server:wait_response(Busy, 5000),
    _ = echo_ping(node(W)),
    {Refused =/= [], count_reasons(#{})}.

%% A DEMONITOR sent before a MONITOR makes room for it, however far behind
%% the worker is: the cap counts what the peer holds in the order it sent
%% (here the worker is busy while the burst reaches the I/O thread).
demonitor_makes_room_in_order(C) ->
    {ok, B, _} = cnb_cluster:start_node(C, #{name => "b"}),
    {_Port, CN} = start_c(C, ["--max-links-per-peer", "200"]),
    {ok, W} = call(B, gen_server, call, [{probe, CN}, spawn]),
    ?assertEqual({true, #{}}, call(B, ?MODULE, churn_at_cap, [W, 210, 100])),
    ?assertEqual(ok, call(B, gen_server, call, [W, {busy, 0}])).

%% B's trapping processes link to and monitor a (non-trapping) cache worker,
%% a probe links to and monitors them, and B disconnects: the worker and the
%% probe die of noconnection, and neither their exits nor a DOWN or DEMONITOR
%% goes back to B: the C node does not connect back to B, and each holder has
%% only the messages its own node made, also after B reconnects.
nothing_sent_back_to_a_departed_node(C) ->
    {ok, A, _} = cnb_cluster:start_node(C, #{name => "a"}),
    {ok, B, _} = cnb_cluster:start_node(C, #{name => "b"}),
    {Port, CN} = start_c(C, ["--log-level", "debug"]),
    {ok, W} = call(A, gen_server, call, [{cache_sup, CN}, {start, 1, x}]),
    Hs = [call(B, ?MODULE, holder, [W]) || _ <- lists:seq(1, 5)],
    ?assertEqual({ok, x}, call(B, gen_server, call, [W, get])),
    %% The C worker links to and monitors B's processes, too.
    {ok, P} = call(A, gen_server, call, [{probe, CN}, spawn]),
    [ok = call(A, gen_server, call, [P, {link, H}]) || H <- Hs],
    [{ok, _} = call(A, gen_server, call, [P, {monitor, H}]) || H <- Hs],
    %% The replies came through A: B may not have read the LINKs yet (a LINK
    %% still in B's socket when B disconnects never makes a link, and no
    %% EXIT then). Each holder's links show when B has.
    true = cnb_cluster:wait_until(
             fun() -> lists:all(fun(H) -> {links, L} = call(B, erlang, process_info, [H, links]),
                                          lists:member(P, L) end, Hs) end, 5000),
    true = call(B, erlang, disconnect_node, [CN]),
    timer:sleep(1500),
    ?assertEqual(false, lists:member(CN, call(B, erlang, nodes, [connected]))),
    %% The worker is gone (noconnection), as seen from A.
    ?assertMatch({'EXIT', {noproc, _}}, catch call(A, gen_server, call, [W, get])),
    %% B connects again; give a stray signal time to arrive.
    true = call(B, net_kernel, connect_node, [CN]),
    ?assertEqual(hi, echo(B, CN, hi)),
    timer:sleep(1000),
    Got = [call(B, ?MODULE, ask, [H, dump, 5000]) || H <- Hs],
    %% Each holder: its own node's noconnection for W (link and monitor) and
    %% for the probe (the probe's link); nothing from the C node.
    Want = fun(R) -> lists:sort([{'EXIT', W, noconnection}, {'EXIT', P, noconnection},
                                 {'DOWN', R, process, W, noconnection}]) end,
    %% Failed once in a full run (a holder without the probe's EXIT, before
    %% the links were awaited above): the C node's debug log goes with a
    %% failure.
    [?debugFmt("holders ~p~nC node:~n~s", [Got, [[L, $\n] || L <- cnb_cluster:cnode_output(C, Port)]])
     || lists:any(fun({R, Ms}) -> Want(R) =/= lists:sort(Ms) end, Got)],
    [?assertEqual(Want(R), lists:sort(Ms)) || {R, Ms} <- Got].
