%% @doc The start options of a standalone cnode_registry, read as Elixir's
%% Registry reads them: a keyword list (a map is taken too), checked in
%% Registry's order (keys, name, meta, partitions, listeners, compressed) with
%% Registry's ArgumentError messages; unknown options are ignored, as there.
%% Also the child specification, and how the installed Elixir's Registry names
%% the kinds of keys in its messages (Elixir 1.20 added `{:duplicate, :pid}'
%% (what `:duplicate' now means) and `{:duplicate, :key}'; its messages name
%% them). `{:duplicate, :pid}' is taken where that Registry takes it;
%% `{:duplicate, :key}' (entries partitioned by key) is refused: our partitions
%% go by pid. Tests:
%% tests/integration/exunit/registry_dropin_test.exs.
-module(cnode_registry_opts).

-export([validate/1, child_spec/1, duplicate_text/0]).
-export_type([options/0, config/0]).

-type options() :: [{atom(), term()}] | #{atom() => term()}.
-type config() :: #{name := atom(), keys := unique | duplicate,
                    partitions := pos_integer(), listeners := [atom()],
                    meta := [{atom(), term()}], compressed := boolean()}.

%% The NIF keeps at most this many listeners per registry (nif/cnr.h).
-define(MAX_LISTENERS, 64).

%% @doc The checked options with their defaults, or Registry's ArgumentError
%% for the first bad one.
-spec validate(options()) -> config().
validate(Opts) when is_list(Opts); is_map(Opts) ->
    Keys = case get(Opts, keys, nil) of
               K when K =:= unique; K =:= duplicate -> K;
               {duplicate, pid} = K ->
                   new_kinds() orelse bad([keys_message(), inspect(K)]),
                   duplicate;
               {duplicate, key} = K ->
                   new_kinds() orelse bad([keys_message(), inspect(K)]),
                   bad(["keys: {:duplicate, :key} is not supported by :cnode_registry (its "
                        "partitions go by pid); use :duplicate"]);
               K -> bad([keys_message(), inspect(K)])
           end,
    Name = case find(Opts, name) of
               {ok, N} when is_atom(N) -> N;
               {ok, N} -> bad(["expected :name to be an atom, got: ", inspect(N)]);
               error -> bad("expected :name option to be present")
           end,
    Meta = get(Opts, meta, []),
    is_keyword(Meta) orelse bad(["expected :meta to be a keyword list, got: ", inspect(Meta)]),
    Partitions = get(Opts, partitions, 1),
    is_integer(Partitions) andalso Partitions > 0 orelse
        bad(["expected :partitions to be a positive integer, got: ", inspect(Partitions)]),
    Listeners = get(Opts, listeners, []),
    is_atom_list(Listeners) orelse
        bad(["expected :listeners to be a list of named processes, got: ", inspect(Listeners)]),
    length(Listeners) =< ?MAX_LISTENERS orelse
        bad(["expected :listeners to be at most ", integer_to_list(?MAX_LISTENERS),
             " named processes, got: ", integer_to_list(length(Listeners))]),
    Compressed = get(Opts, compressed, false),
    is_boolean(Compressed) orelse
        bad(["expected :compressed to be a boolean, got: ", inspect(Compressed)]),
    #{name => Name, keys => Keys, partitions => Partitions, listeners => Listeners,
      meta => Meta, compressed => Compressed}.

%% @doc As Registry's: the id is the name (the module without one), the top
%% process a supervisor. The options are checked when the child starts.
-spec child_spec(options()) -> supervisor:child_spec().
child_spec(Opts) when is_list(Opts); is_map(Opts) ->
    #{id => get(Opts, name, cnode_registry),
      start => {cnode_registry, start_link, [Opts]},
      type => supervisor}.

%% @doc How a duplicate registry's kind reads in Registry's messages: as the
%% installed Elixir writes it ("{:duplicate, :pid}" from 1.20 on), else
%% "duplicate".
-spec duplicate_text() -> string().
duplicate_text() ->
    case new_kinds() of
        true -> "{:duplicate, :pid}";
        false -> "duplicate"
    end.

%%% ------------------------------------------------------------------ internals

%% Registry's message for a bad :keys up to "got: ", in the installed
%% Elixir's words (asked once: its start_link checks :keys before it starts
%% anything), or Elixir 1.14's when there is no Elixir.
keys_message() ->
    case persistent_term:get({?MODULE, keys_message}, undefined) of
        undefined ->
            M = probe_keys_message(),
            persistent_term:put({?MODULE, keys_message}, M),
            M;
        M ->
            M
    end.

probe_keys_message() ->
    Default = "expected :keys to be given and be one of :unique or :duplicate, got: ",
    Registry = 'Elixir.Registry',
    case code:ensure_loaded(Registry) of
        {module, Registry} ->
            try Registry:start_link([{keys, '$cnode_registry_probe'}, {name, '$cnode_registry_probe'}]) of
                _ -> Default
            catch
                error:#{'__struct__' := 'Elixir.ArgumentError', message := Msg} when is_binary(Msg) ->
                    case string:split(unicode:characters_to_list(Msg), "got: ") of
                        [Prefix, _] -> Prefix ++ "got: ";
                        _ -> Default
                    end;
                _:_ -> Default
            end;
        _ ->
            Default
    end.

%% Whether the installed Registry knows {:duplicate, :pid} and {:duplicate, :key}.
new_kinds() ->
    string:find(keys_message(), "{:duplicate, :pid}") =/= nomatch.

%% The first value given for Key, as Keyword.get/2 (lists:keyfind/3 raises
%% badarg on an improper list, as there).
find(Opts, Key) when is_map(Opts) ->
    maps:find(Key, Opts);
find(Opts, Key) ->
    case lists:keyfind(Key, 1, Opts) of
        {Key, V} -> {ok, V};
        false -> error
    end.

get(Opts, Key, Default) ->
    case find(Opts, Key) of
        {ok, V} -> V;
        error -> Default
    end.

%% Proper lists only (an improper one is refused, not a crash).
is_keyword([]) -> true;
is_keyword([{K, _} | T]) when is_atom(K) -> is_keyword(T);
is_keyword(_) -> false.

is_atom_list([]) -> true;
is_atom_list([A | T]) when is_atom(A) -> is_atom_list(T);
is_atom_list(_) -> false.

inspect(T) ->
    cnode_registry_error:inspect(T).

-spec bad(iodata()) -> no_return().
bad(Msg) ->
    cnode_registry_error:argument_error(Msg).
