%% @doc The C node's TLS settings: the `cnode' flags for a `tls' option, and by
%% default the ones this BEAM node's own TLS distribution runs with (its
%% `-proto_dist inet_tls' and `-ssl_dist_optfile' / `-ssl_dist_opt'
%% arguments), so a TLS cluster needs no second configuration.
%% Tests: tests/integration/tls_tests.erl.
-module(cnode_bridge_tls).

-export([args/1, from_node/0, from_args/3]).

-type tls() :: false | #{cert := file:filename(),
                         key => file:filename(),
                         cacert => file:filename(),
                         verify => peer | none,
                         versions => [tls_version()],
                         ciphers => [string()]}.
-type tls_version() :: '1.2' | '1.3' | 'tlsv1.2' | 'tlsv1.3'.
-export_type([tls/0]).

%% @doc The flags for a `tls' option; throws {bad_option, {tls, T}}.
-spec args(tls()) -> [string()].
args(false) -> [];
args(T = #{cert := Cert}) when is_list(Cert) ->
    lists:append([opt(K, V, T) || {K, V} <- lists:sort(maps:to_list(T))]);
args(T) -> throw({bad_option, {tls, T}}).

opt(cert, F, _) -> ["--tls-cert", F];
opt(key, F, _) when is_list(F) -> ["--tls-key", F];
opt(cacert, F, _) when is_list(F) -> ["--tls-cacert", F];
opt(verify, V, _) when V =:= peer; V =:= none -> ["--tls-verify", atom_to_list(V)];
opt(versions, Vs = [_ | _], T) ->
    ["--tls-versions", lists:flatten(lists:join(",", [version(V, T) || V <- Vs]))];
opt(ciphers, Cs = [[_ | _] | _], _) -> ["--tls-ciphers", lists:flatten(lists:join(":", Cs))];
opt(_, _, T) -> throw({bad_option, {tls, T}}).

version(V, _) when V =:= '1.2'; V =:= 'tlsv1.2' -> "1.2";
version(V, _) when V =:= '1.3'; V =:= 'tlsv1.3' -> "1.3";
version(_, T) -> throw({bad_option, {tls, T}}).

%% @doc The settings of this node's TLS distribution, or false when it runs
%% plain TCP (or its certificate cannot be found): certificate, key, CA,
%% verification, and its versions and ciphers when it sets them.
-spec from_node() -> tls().
from_node() ->
    from_args(arg(proto_dist), arg(ssl_dist_optfile), arg(ssl_dist_opt)).

arg(Key) ->
    case init:get_argument(Key) of
        {ok, Vals} -> lists:append(Vals);
        error -> []
    end.

%% @doc from_node/0 on given arguments: the -proto_dist values, the
%% -ssl_dist_optfile values and the -ssl_dist_opt words. The server options
%% count first (the C node accepts with them), the client's fill gaps.
-spec from_args([string()], [string()], [string()]) -> tls().
from_args(Proto, OptFiles, Words) ->
    case lists:any(fun(P) -> lists:suffix("_tls", P) end, Proto) of
        false -> false;
        true ->
            {Server, Client} = file_opts(OptFiles),
            {WServer, WClient} = word_opts(Words),
            settings(WServer ++ Server ++ WClient ++ Client)
    end.

file_opts([]) -> {[], []};
file_opts([F | _]) ->
    case file:consult(F) of
        {ok, [L]} when is_list(L) ->
            {proplists:get_value(server, L, []), proplists:get_value(client, L, [])};
        _ -> {[], []}
    end.

%% -ssl_dist_opt server_certfile F client_verify verify_peer ...
word_opts(Words) -> word_opts(Words, [], []).

word_opts([K, V | Rest], S, C) ->
    case K of
        "server_" ++ Name -> word_opts(Rest, [{list_to_atom(Name), word_value(V)} | S], C);
        "client_" ++ Name -> word_opts(Rest, S, [{list_to_atom(Name), word_value(V)} | C]);
        _ -> word_opts(Rest, S, C)
    end;
word_opts(_, S, C) -> {lists:reverse(S), lists:reverse(C)}.

word_value(V = "verify_" ++ _) -> list_to_atom(V);
word_value(V) -> V.

settings(Opts) ->
    case proplists:get_value(certfile, Opts) of
        Cert when is_list(Cert) ->
            Key = proplists:get_value(keyfile, Opts, Cert),
            Base = #{cert => Cert, key => Key,
                     verify => case proplists:get_value(verify, Opts, verify_none) of
                                   verify_peer -> peer;
                                   _ -> none
                               end},
            lists:foldl(fun(F, M) -> F(Opts, M) end, Base,
                        [fun cacert/2, fun versions/2, fun ciphers/2]);
        _ -> false
    end.

cacert(Opts, M) ->
    case proplists:get_value(cacertfile, Opts) of
        CA when is_list(CA) -> M#{cacert => CA};
        _ -> M
    end.

%% The node's TLS versions the C node speaks (1.2, 1.3); none of them, or
%% none given: the C node's default (both).
versions(Opts, M) ->
    case [V || V <- list_opt(versions, Opts), V =:= 'tlsv1.2' orelse V =:= 'tlsv1.3'] of
        [] -> M;
        Vs -> M#{versions => Vs}
    end.

%% The node's ciphers as OpenSSL names, in any form ssl takes them: one
%% "A:B" string, a list of names, or ssl:cipher_suites/2's maps (a suite
%% OpenSSL has no name for is left out); none: the C node's default.
ciphers(Opts, M) ->
    case lists:append([cipher_names(C) || C <- cipher_list(proplists:get_value(ciphers, Opts))]) of
        [] -> M;
        Cs -> M#{ciphers => Cs}
    end.

list_opt(K, Opts) ->
    case proplists:get_value(K, Opts) of
        L when is_list(L) -> L;
        _ -> []
    end.

cipher_list(S = [C | _]) when is_integer(C) -> string:lexemes(S, ":");
cipher_list(L) when is_list(L) -> L;
cipher_list(_) -> [].

cipher_names(S = [C | _]) when is_integer(C) -> [S];
cipher_names(B) when is_binary(B), byte_size(B) > 0 -> [binary_to_list(B)];
cipher_names(Suite) when is_map(Suite) ->
    try ssl:suite_to_openssl_str(Suite) of
        S when is_list(S) -> [S];
        _ -> []
    catch _:_ -> []
    end;
cipher_names(_) -> [].
