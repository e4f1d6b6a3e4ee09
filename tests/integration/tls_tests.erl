%% Integration tests of TLS distribution (issue 15): the real cnode program
%% with --tls-* beside Erlang nodes on -proto_dist inet_tls (OTP's
%% inet_tls_dist), certificates made at test time (cnb_tls_certs). Calls,
%% links, monitors, :global and the registry's remote mode with the C node
%% both initiating and accepting; big messages; every refusal named in one
%% log line while the C node keeps serving its other peers; certificates
%% reloaded on SIGHUP; the launcher taking the BEAM node's own TLS settings.
-module(tls_tests).
-include_lib("eunit/include/eunit.hrl").

%% Run on the peer nodes.
-export([link_exit/1, registry_remote/1, monitor_on/1, down_reason/1]).
-ifdef(TEST_ONE).
-endif.

-define(T(Name, Secs), {atom_to_list(Name), {timeout, Secs, fun() -> run(fun Name/2) end}}).

tls_test_() ->
    [?T(cluster_both_directions, 180),
     ?T(big_messages_both_ways, 90),
     ?T(stalled_tls_peers_stall_nobody, 90),
     ?T(untrusted_cert_refused, 90),
     ?T(expired_cert_refused, 90),
     ?T(wrong_host_refused_inbound, 90),
     ?T(wrong_host_refused_outbound, 90),
     ?T(no_client_cert_refused, 90),
     ?T(plaintext_peer_on_tls_node, 90),
     ?T(tls_peer_on_plaintext_node, 90),
     ?T(version_outside_set_refused, 90),
     ?T(cipher_outside_set_refused, 90),
     ?T(sighup_reloads_certificates, 90),
     ?T(launcher_takes_node_settings, 90),
     ?T(session_resumed_dialling, 120),
     ?T(session_resumed_accepting, 120),
     ?T(launcher_takes_node_versions_and_ciphers, 90),
     {"launcher options", fun launcher_options/0},
     {"launcher versions and ciphers", fun launcher_versions_and_ciphers/0}].

run(F) ->
    Certs = cnb_tls_certs:make(),
    try cnb_cluster:with(fun(C) -> F(C, Certs) end)
    after cnb_tls_certs:remove(Certs)
    end.

%%% ---------------------------------------------------------------- helpers

tls_node(C, Certs, Prefix) -> tls_node(C, Certs, Prefix, node, #{}, []).

tls_node(C, Certs, Prefix, Which, Opts, Extra) ->
    {ok, P, N} = cnb_cluster:start_node(
                   C, #{name => Prefix,
                        args => cnb_tls_certs:erl_args(Certs, Which, Opts) ++ Extra}),
    {P, N}.

plain_node(C, Prefix) ->
    {ok, P, N} = cnb_cluster:start_node(C, #{name => Prefix}),
    {P, N}.

%% A TLS C node with the demo workers; Extra: more flags.
tls_cnode(C, Certs, Extra) ->
    {ok, Port, CN} = cnb_cluster:start_cnode(
                       C, ["--cookie", cnb_cluster:cookie(C), "--sname",
                           cnb_cluster:unique_name("c"), "--demo"
                           | cnb_tls_certs:cnode_args(Certs, node, Extra)]),
    {Port, CN}.

echo(P, CN) ->
    cnb_cluster:call(P, gen_server, call, [{echo, CN}, {hello, P}, 10000]).

hidden_has(P, N) -> lists:member(N, cnb_cluster:call(P, erlang, nodes, [hidden])).

log_has(C, Port, Re) ->
    lists:any(fun(L) -> re:run(L, Re) =/= nomatch end, cnb_cluster:cnode_output(C, Port)).

wait_log(C, Port, Re) ->
    case cnb_cluster:wait_until(fun() -> log_has(C, Port, Re) end, 15000) of
        true -> ok;
        false -> erlang:error({log_line_missing, Re, [binary_to_list(L) || L <- cnb_cluster:cnode_output(C, Port)]})
    end.

%% A refused peer: its ping fails, the C node logs Re once for it, and a
%% peer connected before, and one connecting after, are both served.
refused(C, Port, CN, Good, Bad, Re) ->
    ?assertEqual({hello, Good}, echo(Good, CN)),
    ?assertEqual(pang, cnb_cluster:call(Bad, net_adm, ping, [CN])),
    wait_log(C, Port, Re),
    ?assertNot(hidden_has(Bad, CN)),
    ?assertEqual({hello, Good}, echo(Good, CN)),
    ok.

%% On a peer: a process trapping exits links to a new C probe, has it crash,
%% and returns the exit reason it got.
link_exit(CN) ->
    process_flag(trap_exit, true),
    {ok, Probe} = gen_server:call({probe, CN}, spawn),
    true = link(Probe),
    catch gen_server:call(Probe, crash, 1000),
    receive {'EXIT', Probe, R} -> {exited, R} after 5000 -> timeout end.

%% On a peer: attaches to the C node's registry in remote mode (through a
%% process that outlives this call) and registers and looks up a key.
registry_remote(CN) ->
    Parent = self(),
    spawn(fun() ->
                  R = cnode_registry:attach(tls_rr, CN, #{mode => remote}),
                  Parent ! {attached, R},
                  receive stop -> ok end
          end),
    receive {attached, {ok, _}} -> ok after 10000 -> error(no_attach) end,
    remote = gen_server:call(tls_rr, mode),
    ok = case cnode_registry:register(tls_rr, {tls_key, 1}, v) of
             {ok, _} -> ok;
             Other -> Other
         end,
    cnode_registry:lookup(tls_rr, {tls_key, 1}).

%%% ---------------------------------------------------------------- tests

%% Three Erlang nodes on inet_tls (one visible cluster) and the C node, which
%% connects to a (initiating); b and c reach it through :global (accepting).
cluster_both_directions(C, Certs) ->
    Args = ["-kernel", "prevent_overlapping_partitions", "false", "-connect_all", "true"],
    [{A, NA}, {B, NB}, {Cc, NC}] =
        [tls_node(C, Certs, Nm, node, #{}, Args) || Nm <- ["a", "b", "c"]],
    pong = cnb_cluster:call(A, net_adm, ping, [NB]),
    pong = cnb_cluster:call(A, net_adm, ping, [NC]),
    [ok = cnb_cluster:call(P, global, sync, []) || P <- [A, B, Cc]],
    {Port, CN} = tls_cnode(C, Certs, ["--connect", atom_to_list(NA)]),
    ?assert(cnb_cluster:wait_until(fun() -> hidden_has(A, CN) end, 10000)),
    ok = wait_log(C, Port, "connected to " ++ atom_to_list(NA)), %% A may see it up first
    %% :global: a C worker's name, registered through a, seen everywhere.
    {ok, W} = cnb_cluster:call(B, gen_server, call, [{cache_sup, CN}, {start, 1, {content, 1}}]),
    ?assertEqual(CN, node(W)),
    ?assert(cnb_cluster:wait_until(
              fun() -> [W, W, W] =:= [cnb_cluster:call(P, global, whereis_name, [{cache, 1}])
                                      || P <- [A, B, Cc]] end, 10000)),
    ?assertEqual({ok, {content, 1}},
                 cnb_cluster:call(Cc, gen_server, call, [{global, {cache, 1}}, get])),
    ?assert(hidden_has(Cc, CN)),
    ok = wait_log(C, Port, "connected from " ++ atom_to_list(NC)),
    %% A monitor from c fires when the worker stops; the name goes everywhere.
    Mon = spawn_monitor_on(Cc, W),
    ok = cnb_cluster:call(A, gen_server, call, [W, stop]),
    ?assertEqual(normal, Mon()),
    ?assert(cnb_cluster:wait_until(
              fun() -> [undefined, undefined, undefined] =:=
                           [cnb_cluster:call(P, global, whereis_name, [{cache, 1}])
                            || P <- [A, B, Cc]] end, 10000)),
    %% A link from b to a C process that crashes.
    ?assertMatch({exited, _}, cnb_cluster:call(B, ?MODULE, link_exit, [CN])),
    %% The registry's remote mode, from b, over TLS.
    ?assertMatch([{_, v}], cnb_cluster:call(B, ?MODULE, registry_remote, [CN])),
    %% The C node calls out: an rpc from its probe to c.
    ?assertEqual({ok, NC}, cnb_cluster:call(A, gen_server, call,
                                            [{probe, CN}, {rpc, NC, erlang, node, [], 5000}])).

%% Monitors Pid from a process on peer P and returns once the monitor is in
%% place at Pid's node; the returned fun waits for DOWN.
spawn_monitor_on(P, Pid) ->
    M = cnb_cluster:call(P, ?MODULE, monitor_on, [Pid], 20000),
    fun() -> cnb_cluster:call(P, ?MODULE, down_reason, [M], 30000) end.

%% Run on a peer: a process there monitors Pid; returns it once the MONITOR
%% signal reached Pid's node (a call to its echo worker rides the same
%% connection after it). down_reason/1 asks it for the DOWN reason.
monitor_on(Pid) ->
    Parent = self(),
    M = spawn(fun() ->
                      Ref = erlang:monitor(process, Pid),
                      _ = gen_server:call({echo, node(Pid)}, sync, 10000),
                      Parent ! {self(), ready},
                      R = receive {'DOWN', Ref, process, _, X} -> X after 30000 -> timeout end,
                      receive {get, From} -> From ! {self(), R} end
              end),
    receive {M, ready} -> M end.

down_reason(M) ->
    M ! {get, self()},
    receive {M, R} -> R after 25000 -> timeout end.

%% Messages of several MB (many TLS records, fragmented distribution
%% messages) both ways, with the C node accepting.
big_messages_both_ways(C, Certs) ->
    {A, _} = tls_node(C, Certs, "a"),
    {_Port, CN} = tls_cnode(C, Certs, []),
    ?assertEqual(pong, cnb_cluster:call(A, net_adm, ping, [CN])),
    [?assert(cnb_cluster:call(A, dist_tests, echo_check, [CN, Size], 60000))
     || Size <- [100, 70000, 3000000, 12000000]].

%% Two sockets that stop mid-way into the TLS handshake (one silent, one
%% after half a ClientHello record) while a TLS node connects and is served;
%% both are closed after net_setuptime with one line each.
stalled_tls_peers_stall_nobody(C, Certs) ->
    {ok, L} = gen_tcp:listen(0, []),
    {ok, P} = inet:port(L),
    gen_tcp:close(L),
    {G, _} = tls_node(C, Certs, "g"),
    {Port, CN} = tls_cnode(C, Certs, ["--port", integer_to_list(P), "--setuptime", "3"]),
    {ok, Silent} = gen_tcp:connect("127.0.0.1", P, [binary, {active, false}]),
    {ok, Half} = gen_tcp:connect("127.0.0.1", P, [binary, {active, false}]),
    ok = gen_tcp:send(Half, <<16#16, 3, 1, 2, 0, 1, 0, 1, 252, 3, 3>>),
    ?assertEqual(pong, cnb_cluster:call(G, net_adm, ping, [CN])),
    ?assertEqual({hello, G}, echo(G, CN)),
    wait_log(C, Port, "127.0.0.1:[0-9]+ \\(not up\\) closed: TLS handshake timed out"),
    ?assert(cnb_cluster:wait_until(
              fun() -> length([X || X <- cnb_cluster:cnode_output(C, Port),
                                    re:run(X, "TLS handshake timed out") =/= nomatch]) =:= 2
              end, 5000)),
    ?assertEqual({error, closed}, gen_tcp:recv(Silent, 0, 2000)),
    ?assertMatch({error, _}, gen_tcp:recv(Half, 0, 2000)),
    ?assertEqual({hello, G}, echo(G, CN)).

untrusted_cert_refused(C, Certs) ->
    {G, _} = tls_node(C, Certs, "g"),
    {Bad, _} = tls_node(C, Certs, "bad", other_ca, #{}, []),
    {Port, CN} = tls_cnode(C, Certs, []),
    refused(C, Port, CN, G, Bad,
            "closed: TLS: the peer's certificate was refused: unable to get local issuer").

expired_cert_refused(C, Certs) ->
    {G, _} = tls_node(C, Certs, "g"),
    {Bad, _} = tls_node(C, Certs, "bad", expired, #{}, []),
    {Port, CN} = tls_cnode(C, Certs, []),
    refused(C, Port, CN, G, Bad, "closed: TLS: the peer's certificate was refused: certificate has expired").

%% The client's certificate is valid but for another host than its name's.
wrong_host_refused_inbound(C, Certs) ->
    {G, _} = tls_node(C, Certs, "g"),
    {Bad, _} = tls_node(C, Certs, "bad", other_host, #{}, []),
    {Port, CN} = tls_cnode(C, Certs, []),
    refused(C, Port, CN, G, Bad, "refused bad_.*: TLS: the peer's certificate is not for host " ++
                cnb_cluster:hostname()).

%% The C node dials a node whose certificate is for another host.
wrong_host_refused_outbound(C, Certs) ->
    {G, NG} = tls_node(C, Certs, "g"),
    {_Bad, NBad} = tls_node(C, Certs, "bad", other_host, #{}, []),
    {Port, CN} = tls_cnode(C, Certs, ["--connect", atom_to_list(NBad),
                                      "--connect", atom_to_list(NG)]),
    wait_log(C, Port, "connection to " ++ atom_to_list(NBad) ++
                 " \\(not up\\) closed: TLS: the peer's certificate was refused: [Hh]ostname mismatch"),
    ?assert(cnb_cluster:wait_until(fun() -> hidden_has(G, CN) end, 10000)),
    ?assertEqual({hello, G}, echo(G, CN)).

no_client_cert_refused(C, Certs) ->
    {G, _} = tls_node(C, Certs, "g"),
    {Bad, _} = tls_node(C, Certs, "bad", none, #{}, []),
    {Port, CN} = tls_cnode(C, Certs, []),
    refused(C, Port, CN, G, Bad, "closed: TLS: the peer sent no certificate").

plaintext_peer_on_tls_node(C, Certs) ->
    {G, _} = tls_node(C, Certs, "g"),
    {Bad, _} = plain_node(C, "bad"),
    {Port, CN} = tls_cnode(C, Certs, []),
    refused(C, Port, CN, G, Bad, "closed: TLS: the peer speaks plain TCP distribution, not TLS").

tls_peer_on_plaintext_node(C, Certs) ->
    {G, _} = plain_node(C, "g"),
    {Bad, _} = tls_node(C, Certs, "bad"),
    {ok, Port, CN} = cnb_cluster:start_cnode(
                       C, ["--cookie", cnb_cluster:cookie(C), "--sname",
                           cnb_cluster:unique_name("c"), "--demo"]),
    refused(C, Port, CN, G, Bad,
            "closed: handshake failed: the peer speaks TLS distribution and this node runs plain TCP").

%% The C node allows TLS 1.3 only; OTP 25's inet_tls_dist offers 1.2 unless
%% told otherwise. Refused both ways; a 1.3 peer is served.
version_outside_set_refused(C, Certs) ->
    {G, NG} = tls_node(C, Certs, "g", node, #{versions => ['tlsv1.3']}, []),
    {Bad, NBad} = tls_node(C, Certs, "bad", node, #{versions => ['tlsv1.2']}, []),
    {Port, CN} = tls_cnode(C, Certs, ["--tls-versions", "1.3", "--connect", atom_to_list(NG)]),
    wait_log(C, Port, "connected to " ++ atom_to_list(NG)),
    refused(C, Port, CN, G, Bad,
            "connection from .* closed: TLS: no protocol version in common with the peer "
            "\\(this node allows TLS 1.3 only"),
    %% Dialling out to the 1.2-only node fails the same way.
    ?assertNotEqual({ok, NBad}, cnb_cluster:call(G, gen_server, call,
                                                 [{probe, CN}, {rpc, NBad, erlang, node, [], 3000},
                                                  10000])),
    wait_log(C, Port, "connection to " ++ atom_to_list(NBad) ++
                 " \\(not up\\) closed: TLS: no protocol version in common"),
    ?assertEqual({hello, G}, echo(G, CN)).

%% The C node allows one TLS 1.2 cipher (ChaCha20), which OTP offers by
%% default; a node allowing only AES-GCM is refused.
cipher_outside_set_refused(C, Certs) ->
    {G, _} = tls_node(C, Certs, "g"),
    {Bad, _} = tls_node(C, Certs, "bad", node, #{versions => ['tlsv1.2'],
                                                 ciphers => "ECDHE-ECDSA-AES128-GCM-SHA256"}, []),
    {Port, CN} = tls_cnode(C, Certs, ["--tls-versions", "1.2",
                                      "--tls-ciphers", "ECDHE-ECDSA-CHACHA20-POLY1305"]),
    refused(C, Port, CN, G, Bad, "connection from .* closed: TLS: no cipher in common with the peer").

%% SIGHUP: new connections use the new certificate (here one from a CA the
%% Erlang nodes do not trust, so they refuse it); the live one stays.
sighup_reloads_certificates(C, Certs = #{dir := Dir}) ->
    {Cert, Key} = maps:get(node, Certs),
    MyCert = filename:join(Dir, "live.pem"),
    MyKey = filename:join(Dir, "live.key"),
    {ok, _} = file:copy(Cert, MyCert),
    {ok, _} = file:copy(Key, MyKey),
    {A, _} = tls_node(C, Certs, "a"),
    {B, _} = tls_node(C, Certs, "b"),
    {ok, Port, CN} = cnb_cluster:start_cnode(
                       C, ["--cookie", cnb_cluster:cookie(C), "--sname",
                           cnb_cluster:unique_name("c"), "--demo", "--tls-cert", MyCert,
                           "--tls-key", MyKey, "--tls-cacert", maps:get(ca, Certs)]),
    ?assertEqual({hello, A}, echo(A, CN)),
    {OCert, OKey} = maps:get(other_ca, Certs),
    {ok, _} = file:copy(OCert, MyCert),
    {ok, _} = file:copy(OKey, MyKey),
    OsPid = cnb_cluster:cnode_os_pid(C, Port),
    _ = os:cmd("kill -HUP " ++ integer_to_list(OsPid)),
    wait_log(C, Port, "TLS: certificates reloaded for new connections"),
    ?assertEqual(pang, cnb_cluster:call(B, net_adm, ping, [CN])),
    wait_log(C, Port, "connection from .* closed: TLS: "),
    %% The connection made before the reload is still up and served.
    ?assertEqual({hello, A}, echo(A, CN)),
    ?assert(cnb_cluster:cnode_alive(C, Port)).

%% A BEAM node on inet_tls starts a C node through cnode_bridge with no tls
%% option: the C node runs TLS with the node's own certificate settings.
launcher_takes_node_settings(C, Certs) ->
    {A, _} = tls_node(C, Certs, "a"),
    {ok, _} = cnb_cluster:call(A, application, ensure_all_started, [cnode_bridge]),
    Name = list_to_atom(cnb_cluster:unique_name("l")),
    {ok, CN} = cnb_cluster:call(A, cnode_bridge, start_cnode, [Name, #{demo => true}], 30000),
    ?assertEqual({hello, A}, echo(A, CN)),
    ?assert(hidden_has(A, CN)),
    %% It is a TLS node: a plain one cannot reach it.
    {P, _} = plain_node(C, "p"),
    ?assertEqual(pang, cnb_cluster:call(P, net_adm, ping, [CN])),
    ok = cnb_cluster:call(A, cnode_bridge, stop_cnode, [CN]).

tls_up(Dir, Peer, V) ->
    "TLS up " ++ Dir ++ " " ++ Peer ++ " \\(" ++ V ++ " [^,)]+".

%% The C node dials an Erlang TLS node, is disconnected and dials again: the
%% second handshake resumes the TLS 1.2 session the Erlang node's server
%% gave, when that server keeps sessions. Whether it does by default depends
%% on the release: ssl's server default for reuse_sessions is true up to
%% OTP 27 (ssl 11.2) and false with {verify, verify_peer} on OTP 29 (ssl
%% 11.7), so the node here says {reuse_sessions, true} in its server options
%% (as a user who wants resumption would), and a second node with ssl's
%% defaults shows each release's default: resumed up to 27, a full handshake
%% on 29. (No TLS 1.3 here: OTP 25's inet_tls_dist cannot issue tickets: its
%% distribution connections have no ticket store and crash when given
%% {session_tickets, _}.)
session_resumed_dialling(C, Certs) ->
    Keep = #{versions => ['tlsv1.2'], server => [{reuse_sessions, true}]},
    Default = #{versions => ['tlsv1.2']},
    {A, _} = tls_node(C, Certs, "a", node, Keep, []),
    ?assert(redial_resumes(C, Certs, A)),
    {D, _} = tls_node(C, Certs, "d", node, Default, []),
    Rel = list_to_integer(cnb_cluster:call(D, erlang, system_info, [otp_release])),
    ?assertEqual(Rel < 29, redial_resumes(C, Certs, D)).

%% A new C node dials the node of peer P, P drops the connection, the C
%% node dials again: true when the second handshake resumed the first's
%% session.
redial_resumes(C, Certs, P) ->
    NP = atom_to_list(cnb_cluster:call(P, erlang, node, [])),
    {Port, CN} = tls_cnode(C, Certs, ["--log-level", "debug", "--connect", NP]),
    Up = tls_up("to", NP, "TLSv1.2"),
    wait_log(C, Port, Up ++ "\\)"),
    ?assertNot(log_has(C, Port, "session resumed")),
    ?assert(cnb_cluster:wait_until(fun() -> hidden_has(P, CN) end, 10000)),
    true = cnb_cluster:call(P, erlang, disconnect_node, [CN]),
    ?assert(cnb_cluster:wait_until(fun() -> tls_ups(C, Port, Up) >= 2 end, 15000)),
    ?assert(cnb_cluster:wait_until(fun() -> hidden_has(P, CN) end, 10000)),
    ?assertEqual({hello, P}, echo(P, CN)),
    log_has(C, Port, Up ++ ", session resumed\\)").

%% How many of the C node's log lines match Re.
tls_ups(C, Port, Re) ->
    length([L || L <- cnb_cluster:cnode_output(C, Port), re:run(L, Re) =/= nomatch]).

%% The accepting side: C node b issues tickets (TLS 1.3) or keeps session IDs
%% (TLS 1.2), C node a dials it (--connect). b drops the connection (a call
%% from a's probe sends more than b's --max-message); a dials again and both
%% sides log the handshake as resumed. (OTP 25's Erlang clients resume no
%% distribution session: TLS 1.2 sessions are filed under the SNI host name
%% and looked up under the IP address dialled, and TLS 1.3 tickets crash as
%% above; so the client here is the C node's own.)
session_resumed_accepting(C, Certs) ->
    [begin
         {E, _} = tls_node(C, Certs, "e"),
         {PortB, CB} = tls_cnode(C, Certs, ["--log-level", "debug", "--max-message", "1024",
                                            "--tls-versions", V]),
         {PortA, CA} = tls_cnode(C, Certs, ["--log-level", "debug", "--connect",
                                            atom_to_list(CB)]),
         wait_log(C, PortA, tls_up("to", atom_to_list(CB), Name) ++ "\\)"),
         wait_log(C, PortB, tls_up("from", ".*", Name) ++ "\\)"),
         ?assertEqual({ok, {hello, x}},
                      cnb_cluster:call(E, gen_server, call,
                                       [{probe, CA}, {call, echo, CB, {hello, x}, 5000}, 10000])),
         ?assertNot(log_has(C, PortB, "session resumed")),
         Big = binary:copy(<<"x">>, 4096),
         ?assertMatch({error, _, _},
                      cnb_cluster:call(E, gen_server, call,
                                       [{probe, CA}, {call, echo, CB, Big, 2000}, 10000])),
         wait_log(C, PortB, tls_up("from", ".*", Name) ++ ", session resumed\\)"),
         wait_log(C, PortA, tls_up("to", atom_to_list(CB), Name) ++ ", session resumed\\)"),
         ?assert(cnb_cluster:wait_until(
                   fun() -> {ok, {hello, y}} =:=
                                cnb_cluster:call(E, gen_server, call,
                                                 [{probe, CA}, {call, echo, CB, {hello, y}, 2000},
                                                  10000])
                   end, 10000))
     end || {V, Name} <- [{"1.3", "TLSv1.3"}, {"1.2", "TLSv1.2"}]].

%% A BEAM node whose TLS distribution allows TLS 1.3 and one cipher starts
%% a C node with no tls option: the C node takes both, so a peer offering
%% TLS 1.2 only is refused and one on TLS 1.3 with that cipher is served.
launcher_takes_node_versions_and_ciphers(C, Certs) ->
    Only = #{versions => ['tlsv1.3'], ciphers => ["TLS_CHACHA20_POLY1305_SHA256"]},
    {A, _} = tls_node(C, Certs, "a", node, Only, []),
    {ok, _} = cnb_cluster:call(A, application, ensure_all_started, [cnode_bridge]),
    Name = list_to_atom(cnb_cluster:unique_name("l")),
    {ok, CN} = cnb_cluster:call(A, cnode_bridge, start_cnode,
                                [Name, #{demo => true, log_level => debug}], 30000),
    ?assertEqual({hello, A}, echo(A, CN)),
    {B12, _} = tls_node(C, Certs, "b", node, #{versions => ['tlsv1.2']}, []),
    ?assertEqual(pang, cnb_cluster:call(B12, net_adm, ping, [CN])),
    {BAes, _} = tls_node(C, Certs, "c", node,
                         #{versions => ['tlsv1.3'], ciphers => ["TLS_AES_128_GCM_SHA256"]}, []),
    ?assertEqual(pang, cnb_cluster:call(BAes, net_adm, ping, [CN])),
    {B13, _} = tls_node(C, Certs, "d", node, Only, []),
    ?assertEqual(pong, cnb_cluster:call(B13, net_adm, ping, [CN])),
    ok = cnb_cluster:call(A, cnode_bridge, stop_cnode, [CN]).

%% The versions and ciphers the launcher takes from the node's options file,
%% in each form ssl takes ciphers.
launcher_versions_and_ciphers() ->
    Dir = filename:join(cnb_cluster:root(), "build"),
    F = filename:join(Dir, cnb_cluster:unique_name("optfile") ++ ".conf"),
    Write = fun(Server) ->
                    ok = file:write_file(F, io_lib:format("~p.~n", [[{server, Server},
                                                                     {client, []}]]))
            end,
    Base = [{certfile, "c.pem"}, {cacertfile, "ca.pem"}, {verify, verify_peer}],
    From = fun() -> cnode_bridge_tls:from_args(["inet_tls"], [F], []) end,
    try
        Write(Base ++ [{versions, ['tlsv1.3', 'tlsv1.2', 'tlsv1.1']},
                       {ciphers, "ECDHE-ECDSA-AES128-GCM-SHA256:TLS_AES_128_GCM_SHA256"}]),
        ?assertMatch(#{versions := ['tlsv1.3', 'tlsv1.2'],
                       ciphers := ["ECDHE-ECDSA-AES128-GCM-SHA256", "TLS_AES_128_GCM_SHA256"]},
                     From()),
        Write(Base ++ [{ciphers, [#{key_exchange => any, cipher => chacha20_poly1305,
                                    mac => aead, prf => sha256},
                                  #{key_exchange => ecdhe_ecdsa, cipher => aes_128_gcm,
                                    mac => aead, prf => sha256}]}]),
        ?assertMatch(#{ciphers := ["TLS_CHACHA20_POLY1305_SHA256",
                                   "ECDHE-ECDSA-AES128-GCM-SHA256"]}, From()),
        ?assertEqual(["--tls-cacert", "ca.pem", "--tls-cert", "c.pem", "--tls-ciphers",
                      "TLS_CHACHA20_POLY1305_SHA256:ECDHE-ECDSA-AES128-GCM-SHA256",
                      "--tls-key", "c.pem", "--tls-verify", "peer"],
                     cnode_bridge_tls:args(From())),
        %% Nothing the C node speaks, or none given: its defaults (no flag).
        Write(Base ++ [{versions, ['tlsv1.1']}]),
        ?assertEqual(#{cert => "c.pem", key => "c.pem", cacert => "ca.pem", verify => peer},
                     From()),
        %% The client's settings fill what the server's leave out.
        ok = file:write_file(F, io_lib:format("~p.~n", [[{server, Base},
                                                         {client, [{versions, ['tlsv1.3']}]}]])),
        ?assertMatch(#{versions := ['tlsv1.3']}, From())
    after
        file:delete(F)
    end.

%% The flags the launcher derives (no nodes needed).
launcher_options() ->
    ?assertEqual(false, cnode_bridge_tls:from_args([], [], [])),
    ?assertEqual(#{cert => "c.pem", key => "k.pem", cacert => "ca.pem", verify => peer},
                 cnode_bridge_tls:from_args(["inet_tls"], [],
                                            ["server_certfile", "c.pem", "server_keyfile",
                                             "k.pem", "server_cacertfile", "ca.pem",
                                             "server_verify", "verify_peer"])),
    ?assertEqual(["--tls-cacert", "ca.pem", "--tls-cert", "c.pem", "--tls-verify", "none",
                  "--tls-versions", "1.2,1.3"],
                 cnode_bridge_tls:args(#{cert => "c.pem", cacert => "ca.pem", verify => none,
                                         versions => ['1.2', 'tlsv1.3']})),
    ?assertEqual(["--tls-cert", "c", "--tls-ciphers", "A:TLS_B"],
                 cnode_bridge_tls:args(#{cert => "c", ciphers => ["A", "TLS_B"]})),
    ?assertThrow({bad_option, {tls, _}}, cnode_bridge_tls:args(#{cert => "c", verify => 'maybe'})).
