%% global_bench: BEAM-side drivers of the :global figures (run by bench_run):
%% registering N names for a C worker (through the C API, via the probe) and
%% for an Erlang process, and how long a name takes to vanish on a node.
-module(global_bench).
-export([register_c/3, register_beam/2, holder/1, wait_gone_us/2]).

%% N names {Tag, I}, each taken by its own C probe (started first, untimed)
%% through the C API, one after another; total microseconds.
-spec register_c(node(), term(), pos_integer()) -> integer().
register_c(CN, Tag, N) ->
    Ps = [begin {ok, P} = gen_server:call({probe, CN}, spawn), P end || _ <- lists:seq(1, N)],
    T0 = erlang:monotonic_time(microsecond),
    _ = [yes = gen_server:call(P, {global_register, {Tag, I}, random_exit}, 30000)
         || {I, P} <- lists:zip(lists:seq(1, N), Ps)],
    erlang:monotonic_time(microsecond) - T0.

%% N names {Tag, I}, each for its own Erlang process (started first, untimed);
%% total microseconds.
-spec register_beam(term(), pos_integer()) -> integer().
register_beam(Tag, N) ->
    Ps = [spawn(fun() -> receive stop -> ok end end) || _ <- lists:seq(1, N)],
    T0 = erlang:monotonic_time(microsecond),
    _ = [yes = global:register_name({Tag, I}, P) || {I, P} <- lists:zip(lists:seq(1, N), Ps)],
    erlang:monotonic_time(microsecond) - T0.

%% A process holding the global name Name; returns its pid.
-spec holder(term()) -> pid().
holder(Name) ->
    Self = self(),
    P = spawn(fun() -> yes = global:register_name(Name, self()), Self ! {held, self()},
                       receive stop -> ok end end),
    receive {held, P} -> P end.

%% Polls until Name is undefined here; microseconds since T0 (os time, shared
%% by the VMs on this host).
-spec wait_gone_us(term(), integer()) -> integer().
wait_gone_us(Name, T0) ->
    case global:whereis_name(Name) of
        undefined -> os:system_time(microsecond) - T0;
        _ -> wait_gone_us(Name, T0)
    end.
