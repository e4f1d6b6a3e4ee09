%% cnb_cnode: the real cnode program as the integration suites start it and read
%% its log, on top of cnb_cluster (which owns the process and its output).
%% Used by dist_tests, hostile_auth_tests, hostile_conn_tests,
%% hostile_signals_tests, hostile_terms_tests, nif_tests, simultaneous_tests,
%% visible_heal_tests, visible_reg_tests and tests/reliability's rel_net.
-module(cnb_cnode).

-export([start/2, start/3, has_line/3, wait_line/3, count_lines/3, claim_name/3]).
-export([global_resolved/2]).

%% @doc Starts the cnode program with the context's cookie (`--cookie') and
%% Args, and waits for its READY line; returns its port and node name.
-spec start(cnb_cluster:ctx(), [string()]) -> {port(), node()}.
start(C, Args) -> start(C, Args, #{}).

%% @doc As start/2, with cnb_cluster:start_cnode/2's options (exe, env, ...).
-spec start(cnb_cluster:ctx(), [string()], map()) -> {port(), node()}.
start(C, Args, Opts) ->
    {ok, Port, Node} = cnb_cluster:start_cnode(C, {["--cookie", cnb_cluster:cookie(C) | Args],
                                                   Opts}),
    {Port, Node}.

%% @doc True when a line the cnode wrote so far matches the regular expression.
-spec has_line(cnb_cluster:ctx(), port(), iodata()) -> boolean().
has_line(C, Port, Re) ->
    lists:any(fun(L) -> re:run(L, Re) =/= nomatch end, cnb_cluster:cnode_output(C, Port)).

%% @doc Waits up to 10 s for such a line; fails the test with the output if
%% none comes.
-spec wait_line(cnb_cluster:ctx(), port(), iodata()) -> ok.
wait_line(C, Port, Re) ->
    case cnb_cluster:wait_until(fun() -> has_line(C, Port, Re) end, 10000) of
        true -> ok;
        false -> erlang:error({log_line_missing, Re, cnb_cluster:cnode_output(C, Port)})
    end.

%% @doc How many lines the cnode wrote so far match the regular expression.
-spec count_lines(cnb_cluster:ctx(), port(), iodata()) -> non_neg_integer().
count_lines(C, Port, Re) ->
    length([L || L <- cnb_cluster:cnode_output(C, Port), re:run(L, Re) =/= nomatch]).

%% @doc A client without the cookie: connects to a C node's distribution port
%% TcpPort, sends send_name ('N', handshake version 6) claiming Name, reads
%% the status, and keeps the socket open (the caller closes it). With
%% AnswerAlive, it says "true" to alive (the live connection is dead, it
%% claims) and then holds at the challenge it cannot answer.
-spec claim_name(inet:port_number(), node(), boolean()) -> {gen_tcp:socket(), binary()}.
claim_name(TcpPort, Name, AnswerAlive) ->
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, TcpPort, [binary, {packet, 2}, {active, false}]),
    NameB = atom_to_binary(Name, utf8),
    %% Every flag up to UNLINK_ID, and SPAWN; not NAME_ME.
    Flags = 16#3FFFFFF bor (1 bsl 32),
    ok = gen_tcp:send(S, <<$N, Flags:64, 1:32, (byte_size(NameB)):16, NameB/binary>>),
    {ok, <<$s, Status/binary>>} = gen_tcp:recv(S, 0, 5000),
    case {Status, AnswerAlive} of
        {<<"alive">>, true} ->
            ok = gen_tcp:send(S, <<$s, "true">>),
            {ok, <<$N, _/binary>>} = gen_tcp:recv(S, 0, 5000);
        _ -> ok
    end,
    {S, Status}.

%% Returns once the visible C node CN has taken peer P's `resolved` (the end
%% of P's :global sync session with it, on C's side too): global:sync() on P
%% may return before it reached C, and a call to C's global_name_server comes
%% after it on the same connection. Then C counts P as known, and its own
%% registrations reach P.
-spec global_resolved(pid(), node()) -> true.
global_resolved(P, CN) ->
    true = cnb_cluster:call(P, gen_server, call, [{global_name_server, CN}, {del_lock, {x, y}}, 10000]).
