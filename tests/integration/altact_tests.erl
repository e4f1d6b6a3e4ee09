%% ALTACT_SIG_SEND (OTP 28+, EEP 76) between real OTP nodes and the real
%% cnode program: priority messages and exit signals (by pid and by name) reach
%% a C worker ahead of its ordinary messages, with and without a trace token;
%% call replies through an alias arrive as ALTACT_SIG_SEND (plain and
%% priority, with a token); an exit signal through an alias is taken and
%% dropped without harm; a priority message overtakes the ordinary ones the
%% worker's thread took from its mailbox in one batch and has not handled
%% yet (rt_sched.c takes a batch under one lock). The nodes must run OTP 28 or later: on an older
%% release (the host's OTP 25) the suite is one test that says so; `make
%% test-otp' runs it on OTP 29 (scripts/test-otp). Every flag combination
%% decodes in tests/unit/test_frame.c (dist_decode_altact_every_flag).
-module(altact_tests).
-include_lib("eunit/include/eunit.hrl").

%% Run on the peer node.
-export([prio_scenario/1, prio_batch_scenario/1, server/1]).

altact_test_() ->
    case list_to_integer(erlang:system_info(otp_release)) >= 28 of
        true ->
            [{"priority signals overtake, alias replies, exit via alias",
              {timeout, 120, fun() -> cnb_cluster:with(fun priority_and_aliases/1) end}}];
        false ->
            [{"ALTACT_SIG needs OTP 28+ nodes (make test-otp runs it on OTP 29): skipped on OTP "
              ++ erlang:system_info(otp_release), fun() -> ok end}]
    end.

priority_and_aliases(C) ->
    {ok, A, _} = cnb_cluster:start_node(C, #{name => "a"}),
    {ok, Port, CN} = cnb_cluster:start_cnode(
                       C, ["--cookie", cnb_cluster:cookie(C), "--sname",
                           cnb_cluster:unique_name("c"), "--demo"]),
    {Called, Got} = cnb_cluster:call(A, ?MODULE, prio_scenario, [CN], 60000),
    %% The held call ended with the priority reply that came through its
    %% alias with a trace token (the exit through the alias was dropped).
    ?assertEqual({ok, held_ok}, Called),
    ?assertEqual([prio_pid, prio_name, {'EXIT', exiter, prio_exit}, prio_pid_token,
                  prio_name_token, ord1, ord2, ord_token], Got),
    ?assertEqual({{ok, held_ok}, [prio_late, ord_batched]},
                 cnb_cluster:call(A, ?MODULE, prio_batch_scenario, [CN], 60000)),
    %% Still connected, and nothing malformed on the way.
    ?assertEqual(ok, cnb_cluster:call(A, gen_server, call, [{probe, CN}, {subscribe, self()}])),
    Out = cnb_cluster:cnode_output(C, Port),
    ?assertEqual([], [L || L <- Out, binary:match(L, [<<"malformed">>, <<"ERROR">>]) =/= nomatch]).

%% On the peer: holds the probe worker inside a call to a server here, queues
%% ordinary and priority signals to it meanwhile, then lets the call end.
%% Returns {CallResult, the info messages in the order the probe took them}.
prio_scenario(CN) ->
    Me = self(),
    ok = gen_server:call({probe, CN}, {subscribe, Me}),
    ok = gen_server:call({probe, CN}, {trap_exit, true}),
    {probe, CN} ! hello,
    P = receive {probe_info, Pid, hello} -> Pid after 5000 -> error(no_probe) end,
    S = spawn_link(?MODULE, server, [Me]),
    spawn_link(fun() -> Me ! {called, gen_server:call({probe, CN}, {call, S, x, 20000}, 30000)} end),
    receive {held, S} -> ok after 10000 -> error(not_held) end,
    %% The probe's worker is busy in the call: all of these wait in its mailbox.
    P ! ord1,
    erlang:send(P, prio_pid, [priority]),
    P ! ord2,
    erlang:send({probe, CN}, prio_name, [priority]),
    %% erlang:exit/3 is new in OTP 28: called through apply so that this
    %% module compiles on older releases too.
    Exiter = spawn(fun() -> apply(erlang, exit, [P, prio_exit, [priority]]), Me ! exited end),
    receive exited -> ok end,
    seq_trace:set_token(label, 7),
    erlang:send(P, prio_pid_token, [priority]),
    erlang:send({probe, CN}, prio_name_token, [priority]),
    P ! ord_token,
    seq_trace:set_token([]),
    S ! go,
    Called = receive {called, R} -> R after 30000 -> timeout end,
    Got = [receive {probe_info, P, M} -> M after 5000 -> missing end || _ <- lists:seq(1, 8)],
    {Called, [case M of {'EXIT', Exiter, Why} -> {'EXIT', exiter, Why}; _ -> M end || M <- Got]}.

%% On the peer: the probe's worker takes a call and an ordinary message
%% queued behind it in one batch; while the call holds it, a priority message
%% comes. Returns {CallResult, the two info messages in the order taken}.
prio_batch_scenario(CN) ->
    Me = self(),
    ok = gen_server:call({probe, CN}, {subscribe, Me}),
    {probe, CN} ! hello,
    P = receive {probe_info, Pid, hello} -> Pid after 5000 -> error(no_probe) end,
    S1 = spawn_link(?MODULE, server, [Me]),
    S2 = spawn_link(?MODULE, server, [Me]),
    spawn_link(fun() -> gen_server:call(P, {call, S1, x, 20000}, 30000) end),
    receive {held, S1} -> ok after 10000 -> error(not_held) end,
    %% Both wait in the mailbox while the first call holds the worker.
    spawn_link(fun() -> Me ! {called, gen_server:call(P, {call, S2, x, 20000}, 30000)} end),
    timer:sleep(300),
    P ! ord_batched,
    timer:sleep(300),
    S1 ! go,
    receive {held, S2} -> ok after 10000 -> error(not_held) end,
    erlang:send(P, prio_late, [priority]),
    S2 ! go,
    Called = receive {called, R} -> R after 30000 -> timeout end,
    {Called, [receive {probe_info, P, M} -> M after 5000 -> missing end || _ <- [1, 2]]}.

%% Takes one call and holds it until told `go'; then sends an exit signal
%% through the caller's alias and the reply as a priority message through the
%% same alias, with a trace token.
server(Test) ->
    receive
        {'$gen_call', {_, [alias | Alias] = Tag}, _} ->
            Test ! {held, self()},
            receive go -> ok end,
            exit(Alias, through_alias),
            seq_trace:set_token(label, 9),
            erlang:send(Alias, {Tag, held_ok}, [priority]),
            seq_trace:set_token([]),
            receive stop -> ok end
    end.
