%% @doc The options of cnode_bridge:start_cnode/2 as Erlang and Elixir callers
%% write them: a map or a keyword list (the first value of a key counts, as
%% with Elixir's Keyword.get/2), strings as charlists or binaries (UTF-8) for
%% the name, `host', `cookie', `executable', `listen', the nodes of `connect'
%% and the files of `tls'. normalize/2 turns them into the one form
%% cnode_bridge_cnode takes (atoms for the name, charlists for strings, a map);
%% it checks only what it converts (cnode_bridge_cnode:args/2 checks the rest).
%% Tests: tests/integration/exunit/start_cnode_test.exs.
-module(cnode_bridge_opts).

-export([normalize/2]).

%% @doc `{ok, NameAtom, OptsMap}', or `{error, {bad_option, {Key, Value}}}'
%% (the value as given), `{error, {bad_option, {name, Name}}}' for a name that
%% is not an atom or a string of letters, digits, `_' and `-', or
%% `{error, {bad_option, Opts}}' when Opts is neither a map nor a keyword list.
-spec normalize(term(), term()) -> {ok, atom(), map()} | {error, {bad_option, term()}}.
normalize(Name0, Opts0) ->
    try
        Name = name(Name0),
        Opts = to_map(Opts0),
        {ok, Name, maps:map(fun value/2, Opts)}
    catch
        throw:{bad_option, _} = Bad -> {error, Bad}
    end.

name(N) when is_atom(N) -> N;
name(N) when is_binary(N); is_list(N) ->
    case string(N) of
        {ok, S} when S =/= [] ->
            case lists:all(fun name_char/1, S) of
                true -> list_to_atom(S);
                false -> throw({bad_option, {name, N}})
            end;
        _ -> throw({bad_option, {name, N}})
    end;
name(N) -> throw({bad_option, {name, N}}).

name_char(C) ->
    (C >= $a andalso C =< $z) orelse (C >= $A andalso C =< $Z) orelse
        (C >= $0 andalso C =< $9) orelse C =:= $_ orelse C =:= $-.

to_map(M) when is_map(M) -> M;
to_map(L) when is_list(L) ->
    case is_keyword(L) of
        %% foldr: the first value of a key is the one left.
        true -> lists:foldr(fun({K, V}, M) -> M#{K => V} end, #{}, L);
        false -> throw({bad_option, L})
    end;
to_map(Other) -> throw({bad_option, Other}).

is_keyword([]) -> true;
is_keyword([{K, _} | T]) when is_atom(K) -> is_keyword(T);
is_keyword(_) -> false.

%% Strings to charlists; anything else is left for args/2 to judge.
value(K, V) when K =:= host; K =:= executable; K =:= listen ->
    text(K, V);
value(cookie, V) when is_atom(V) -> V;
value(cookie, V) -> text(cookie, V);
value(connect, Ns) when is_list(Ns) ->
    [case N of
         _ when is_atom(N) -> N;
         _ -> text(connect, N, Ns)
     end || N <- Ns];
value(tls, T) when is_list(T) ->
    value(tls, to_map(T));
value(tls, T) when is_map(T) ->
    maps:map(fun(K, V) -> tls_value(K, V, T) end, T);
value(_, V) ->
    V.

tls_value(K, V, T) when K =:= cert; K =:= key; K =:= cacert -> text(tls, V, T);
tls_value(ciphers, Cs, T) when is_list(Cs) -> [text(tls, C, T) || C <- Cs];
tls_value(_, V, _) -> V.

text(K, V) -> text(K, V, V).

%% V as a charlist (a tuple such as an IP address is left as it is);
%% throws {bad_option, {K, Shown}} otherwise.
text(_, V, _) when is_tuple(V) -> V;
text(K, V, Shown) ->
    case string(V) of
        {ok, S} -> S;
        error -> throw({bad_option, {K, Shown}})
    end.

string(B) when is_binary(B) ->
    case unicode:characters_to_list(B) of
        L when is_list(L) -> {ok, L};
        _ -> error
    end;
string(L) when is_list(L) ->
    case io_lib:printable_unicode_list(L) of
        true -> {ok, L};
        false -> error
    end;
string(_) ->
    error.
