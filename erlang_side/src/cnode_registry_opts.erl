%% @doc The start options of a standalone cnode_registry, read as Elixir's
%% Registry reads them: a keyword list (a map is taken too), checked in
%% Registry's order (keys, name, meta, partitions, listeners, compressed) with
%% Registry's ArgumentError messages; unknown options are ignored, as there.
%% Also the child specification. Tests:
%% tests/integration/exunit/registry_dropin_test.exs.
-module(cnode_registry_opts).

-export([validate/1, child_spec/1]).
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
    Keys = get(Opts, keys, nil),
    lists:member(Keys, [unique, duplicate]) orelse
        bad(["expected :keys to be given and be one of :unique or :duplicate, got: ",
             inspect(Keys)]),
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

%%% ------------------------------------------------------------------ internals

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
