%% @doc The exceptions of cnode_registry where Elixir's Registry raises an
%% `ArgumentError' with a message: the same exception (an
%% `#{'__struct__' => 'Elixir.ArgumentError', message => Binary}' map, which
%% Elixir's `rescue' takes for an ArgumentError and Erlang code catches as
%% `error:#{message := Msg}'), with terms written as Elixir's `inspect' writes
%% them when Elixir is loaded (`~p' otherwise). Messages that name Registry's
%% functions name cnode_registry's instead. Tests:
%% tests/integration/exunit/registry_dropin_test.exs.
-module(cnode_registry_error).

-export([argument_error/1, badarg/2, badarg/3, unknown_registry/2, known/1,
         bad_spec/1, inspect/1]).

%% @doc Raises an ArgumentError with message Msg.
-spec argument_error(iodata()) -> no_return().
argument_error(Msg) ->
    erlang:error(#{'__struct__' => 'Elixir.ArgumentError', '__exception__' => true,
                   message => unicode:characters_to_binary(Msg)}).

%% @doc Same as `badarg(Reg, Stacktrace, default)'.
-spec badarg(atom(), list()) -> no_return().
badarg(Reg, Stacktrace) ->
    badarg(Reg, Stacktrace, default).

%% @doc For a `badarg' raised while working on registry Reg: Registry's
%% "unknown registry" error if Reg is not a registry here, else the same
%% `badarg' again (a bad key, a limit of the NIF, or the caller's own
%% callback). `Which' picks the message meta/2 has.
-spec badarg(atom(), list(), default | meta) -> no_return().
badarg(Reg, Stacktrace, Which) ->
    case known(Reg) of
        true -> erlang:raise(error, badarg, Stacktrace);
        false -> unknown_registry(Reg, Which)
    end.

%% @doc Raises Registry's error for a name that is no registry.
-spec unknown_registry(atom(), default | meta) -> no_return().
unknown_registry(Reg, default) ->
    argument_error(["unknown registry: ", inspect(Reg)]);
unknown_registry(Reg, meta) ->
    argument_error(["unknown registry: ", inspect(Reg), ". Either the registry name is "
                    "invalid or the registry is not running, possibly because its "
                    "application isn't started"]).

%% @doc Whether Reg names a registry of this VM (started or attached).
-spec known(atom()) -> boolean().
known(Reg) ->
    try cnode_registry_nif:info(Reg) of
        _ -> true
    catch error:badarg -> false
    end.

%% @doc A match specification ETS refused (a bad guard or body), as
%% Registry's match functions report it (the message of `ets:select/2');
%% an unknown registry first, as Registry looks the registry up first.
-spec bad_spec(atom()) -> no_return().
bad_spec(Reg) ->
    known(Reg) orelse unknown_registry(Reg, default),
    argument_error(<<"errors were found at the given arguments:\n\n"
                     "  * 2nd argument: not a valid match specification\n">>).

%% @doc Term as Elixir's `inspect/1' writes it, or as `~0tp' without Elixir.
-spec inspect(term()) -> binary().
inspect(Term) ->
    Kernel = 'Elixir.Kernel',
    case erlang:function_exported(Kernel, inspect, 1) orelse
        (code:ensure_loaded(Kernel) =:= {module, Kernel}) of
        true -> Kernel:inspect(Term);
        false -> unicode:characters_to_binary(io_lib:format("~0tp", [Term]))
    end.
