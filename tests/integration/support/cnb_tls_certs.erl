%% @doc Test certificates made at test time with the `openssl' program: a CA,
%% node certificates for this host (its short name, localhost and 127.0.0.1),
%% an expired one, one from another CA, one for another host and one whose
%% key does not sign for it; and option files for Erlang nodes on
%% `-proto_dist inet_tls'. Used by tls_tests.
-module(cnb_tls_certs).

-export([make/0, remove/1, optfile/3, erl_args/3, cnode_args/2, cnode_args/3]).

-type certs() :: #{dir := file:filename(), ca := file:filename(),
                   atom() => {file:filename(), file:filename()} | file:filename()}.
-export_type([certs/0]).

%% @doc Makes a fresh directory of certificates. Keys: ca (the CA file),
%% node, node2, expired, other_ca, other_host (each {Cert, Key}), ca2 (the
%% other CA's file).
-spec make() -> certs().
make() ->
    Dir = filename:join(["/tmp", cnb_cluster:unique_name("cnb_tls")]),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    Host = cnb_cluster:hostname(),
    Good = "DNS:" ++ Host ++ ",DNS:localhost,IP:127.0.0.1",
    ca(Dir, "ca"),
    ca(Dir, "ca2"),
    #{dir => Dir,
      ca => filename:join(Dir, "ca.pem"),
      ca2 => filename:join(Dir, "ca2.pem"),
      node => leaf(Dir, "node", "ca", Host, Good, "2"),
      node2 => leaf(Dir, "node2", "ca", Host, Good, "2"),
      expired => leaf(Dir, "expired", "ca", Host, Good, "-1"),
      other_ca => leaf(Dir, "other_ca", "ca2", Host, Good, "2"),
      other_host => leaf(Dir, "other_host", "ca", "elsewhere.example",
                         "DNS:elsewhere.example", "2")}.

%% @doc Removes the directory make/0 made.
-spec remove(certs()) -> ok.
remove(#{dir := Dir}) ->
    _ = file:del_dir_r(Dir),
    ok.

ca(Dir, Name) ->
    run(["openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes",
         " -keyout ", key(Dir, Name), " -out ", pem(Dir, Name), " -days 2",
         " -subj '/CN=cnode_bridge test ", Name, "'"]),
    pem(Dir, Name).

%% A certificate for CN Host with the given subjectAltName, signed by CA,
%% valid for Days days (a negative number: expired already).
leaf(Dir, Name, CA, Host, San, Days) ->
    Ext = filename:join(Dir, Name ++ ".ext"),
    ok = file:write_file(Ext, ["subjectAltName=", San, "\n",
                               "basicConstraints=CA:FALSE\n",
                               "keyUsage=digitalSignature,keyEncipherment\n",
                               "extendedKeyUsage=serverAuth,clientAuth\n"]),
    Csr = filename:join(Dir, Name ++ ".csr"),
    run(["openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes",
         " -keyout ", key(Dir, Name), " -out ", Csr, " -subj '/CN=", Host, "'"]),
    run(["openssl x509 -req -in ", Csr, " -CA ", pem(Dir, CA), " -CAkey ", key(Dir, CA),
         " -CAcreateserial -out ", pem(Dir, Name), validity(Days), " -extfile ", Ext]),
    {pem(Dir, Name), key(Dir, Name)}.

%% OpenSSL 3.5+ (the OTP 27 and 29 chroots) refuse a negative -days; those
%% that have -not_before/-not_after get an expired certificate's dates so.
validity(Days) ->
    Neg = string:prefix(Days, "-") =/= nomatch,
    Has = string:find(os:cmd("openssl x509 -help 2>&1"), "not_after") =/= nomatch,
    case Neg andalso Has of
        false -> [" -days ", Days];
        true ->
            Now = os:system_time(second),
            Stamp = fun(S) ->
                            {{Y, Mo, D}, {H, Mi, Se}} =
                                calendar:system_time_to_universal_time(S, second),
                            io_lib:format("~4..0b~2..0b~2..0b~2..0b~2..0b~2..0bZ",
                                          [Y, Mo, D, H, Mi, Se])
                    end,
            [" -not_before ", Stamp(Now + 86400 * (list_to_integer(Days) - 1)),
             " -not_after ", Stamp(Now + 86400 * list_to_integer(Days))]
    end.

pem(Dir, Name) -> filename:join(Dir, Name ++ ".pem").
key(Dir, Name) -> filename:join(Dir, Name ++ ".key").

run(Cmd) ->
    Out = os:cmd(lists:flatten(Cmd) ++ " 2>&1; echo \"EXIT=$?\""),
    case string:find(Out, "EXIT=0") of
        nomatch -> error({openssl_failed, lists:flatten(Cmd), Out});
        _ -> ok
    end.

%% @doc Writes an -ssl_dist_optfile for an Erlang node using the certificate
%% Which (a key of certs(), or none: no certificate at all) and returns its
%% path. Opts: verify (verify_peer, the default, or verify_none), versions,
%% ciphers (ssl's option as given); server: more ssl options for the
%% server side only (e.g. [{reuse_sessions, true}]).
-spec optfile(certs(), atom(), map()) -> file:filename().
optfile(Certs = #{dir := Dir, ca := CA}, Which, Opts) ->
    Own = case Which of
              none -> [];
              _ -> {Cert, Key} = maps:get(Which, Certs),
                   [{certfile, Cert}, {keyfile, Key}]
          end,
    Verify = maps:get(verify, Opts, verify_peer),
    Vers = case maps:get(versions, Opts, undefined) of
               undefined -> [];
               Vs -> [{versions, Vs}]
           end,
    Ciphers = case maps:get(ciphers, Opts, undefined) of
                  undefined -> [];
                  Cs -> [{ciphers, Cs}]
              end,
    Common = Own ++ [{cacertfile, CA}, {verify, Verify}] ++ Vers ++ Ciphers,
    Server = Common ++ [{fail_if_no_peer_cert, Verify =:= verify_peer}]
        ++ maps:get(server, Opts, []),
    F = filename:join(Dir, cnb_cluster:unique_name("dist") ++ ".conf"),
    ok = file:write_file(F, io_lib:format("~p.~n", [[{server, Server}, {client, Common}]])),
    F.

%% @doc erl arguments for a TLS distribution node (see optfile/3).
-spec erl_args(certs(), atom(), map()) -> [string()].
erl_args(Certs, Which, Opts) ->
    ["-proto_dist", "inet_tls", "-ssl_dist_optfile", optfile(Certs, Which, Opts)].

%% @doc cnode arguments for TLS with the certificate Which, trusting the CA.
-spec cnode_args(certs(), atom()) -> [string()].
cnode_args(Certs, Which) -> cnode_args(Certs, Which, []).

-spec cnode_args(certs(), atom(), [string()]) -> [string()].
cnode_args(Certs = #{ca := CA}, Which, Extra) ->
    {Cert, Key} = maps:get(Which, Certs),
    ["--tls-cert", Cert, "--tls-key", Key, "--tls-cacert", CA | Extra].
