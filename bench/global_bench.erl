%% global_bench: BEAM-side drivers of the :global figures (run by bench_run):
%% registering N names for a C worker (through the C API, via the probe) and
%% for an Erlang process, and how long a name takes to vanish on a node.
-module(global_bench).
-export([register_c/3, register_beam/2, holder/1, wait_gone_us/2]).
-export([start_beam_cache_sup/0, start_global_us/3, whereis_c_ns/3, whereis_beam_ns/2]).

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
%% by the VMs on this host). The poller yields between looks: it must not
%% hold the scheduler global_name_server waits for (without the yield, a
%% DOWN that lands in the poller's run queue waited out the poller's whole
%% time slice, a few hundred microseconds, and the figure measured that).
-spec wait_gone_us(term(), integer()) -> integer().
wait_gone_us(Name, T0) ->
    case global:whereis_name(Name) of
        undefined -> os:system_time(microsecond) - T0;
        _ -> erlang:yield(), wait_gone_us(Name, T0)
    end.

%% The BEAM counterpart of the C node's cache_sup, registered here as
%% beam_cache_sup: {start, Id, Content} checks :global for {cache, Id}, starts
%% a process, registers it as {cache, Id} and replies {ok, Pid}; the process
%% answers get and stop like a C cache worker.
-spec start_beam_cache_sup() -> ok.
start_beam_cache_sup() ->
    Self = self(),
    spawn(fun() -> register(beam_cache_sup, self()), Self ! ready, sup_loop() end),
    receive ready -> ok end.

sup_loop() ->
    receive
        {'$gen_call', From, {start, Id, Content}} ->
            Name = {cache, Id},
            Reply = case global:whereis_name(Name) of
                        undefined ->
                            P = spawn(fun() -> cache_loop(Content) end),
                            case global:register_name(Name, P) of
                                yes -> {ok, P};
                                no -> exit(P, kill), {error, {already_started, undefined}}
                            end;
                        Owner ->
                            {error, {already_started, Owner}}
                    end,
            gen_server:reply(From, Reply),
            sup_loop()
    end.

cache_loop(Content) ->
    receive
        {'$gen_call', From, get} -> gen_server:reply(From, {ok, Content}), cache_loop(Content);
        {'$gen_call', From, stop} -> gen_server:reply(From, ok)
    end.

%% K workers started one after another through Sup ({cache_sup, CNode} or
%% {beam_cache_sup, Node}), each taking the :global name {cache, {Tag, I}};
%% the median microseconds of one start, from the request until {ok, Pid} is
%% back. The workers are stopped afterwards (untimed) so rounds do not pile
%% names up.
-spec start_global_us(term(), term(), pos_integer()) -> float().
start_global_us(Sup, Tag, K) ->
    R = [begin
             T0 = erlang:monotonic_time(nanosecond),
             {ok, P} = gen_server:call(Sup, {start, {Tag, I}, x}, 30000),
             {erlang:monotonic_time(nanosecond) - T0, P}
         end || I <- lists:seq(1, K)],
    [ok = gen_server:call(P, stop, 30000) || {_, P} <- R],
    bench_stats:median([T || {T, _} <- R]) / 1000.

%% Nanoseconds per cnb_global_whereis of Name on the C node (N in a row by
%% its probe, timed in C: the lookup alone, no call round trip).
-spec whereis_c_ns(node(), term(), pos_integer()) -> float().
whereis_c_ns(CN, Name, N) ->
    {ok, Ns} = gen_server:call({probe, CN}, {global_whereis_bench, Name, N}, 300000),
    Ns / N.

%% Nanoseconds per global:whereis_name(Name) here (N in a row).
-spec whereis_beam_ns(term(), pos_integer()) -> float().
whereis_beam_ns(Name, N) ->
    T0 = erlang:monotonic_time(nanosecond),
    whereis_loop(Name, N),
    (erlang:monotonic_time(nanosecond) - T0) / N.

whereis_loop(_, 0) -> ok;
whereis_loop(Name, N) -> _ = global:whereis_name(Name), whereis_loop(Name, N - 1).
