%% dist_beam: the BEAM side of the distribution benchmarks (driven by
%% bench_run): the sink that counts messages, and the BEAM-to-BEAM equivalents
%% of bench_dist.c (connection set-up, one-way throughput, sender CPU).
-module(dist_beam).
-export([start_sink/0, connect_setup_us/2, send/2, send/3]).

%% Registers bench_sink: {start, N, From} then N messages -> From ! {done, N}.
-spec start_sink() -> ok.
start_sink() ->
    Self = self(),
    spawn(fun() -> register(bench_sink, self()), Self ! ready, sink() end),
    receive ready -> ok end.

sink() ->
    receive
        {start, N, From} -> count(N), From ! {done, N}, sink()
    end.

count(0) -> ok;
count(N) -> receive {m, _} -> count(N - 1) end.

%% Median time of net_kernel:connect_node/1 to Target, K times, in us.
-spec connect_setup_us(node(), pos_integer()) -> number().
connect_setup_us(Target, K) ->
    Ts = [begin
              erlang:disconnect_node(Target),
              wait_gone(Target),
              timer:sleep(20),
              T0 = erlang:monotonic_time(microsecond),
              true = net_kernel:connect_node(Target),
              erlang:monotonic_time(microsecond) - T0
          end || _ <- lists:seq(1, K)],
    lists:nth(K div 2 + 1, lists:sort(Ts)).

wait_gone(T) ->
    case lists:member(T, nodes([visible, hidden])) of
        true -> timer:sleep(1), wait_gone(T);
        false -> ok
    end.

%% Sends N x {m, I} to {bench_sink, Target}; returns {MsgsPerSec, CpuNsPerMsg}.
-spec send(node(), pos_integer()) -> {number(), number()}.
send(Target, N) -> send(Target, N, 0).

%% The same with {m, <<Bytes bytes>>} (the integer I when Bytes is 0).
-spec send(node(), pos_integer(), non_neg_integer()) -> {number(), number()}.
send(Target, N, Bytes) ->
    Payload = binary:copy(<<"x">>, Bytes),
    true = net_kernel:connect_node(Target),
    {bench_sink, Target} ! {start, N, self()},
    {R0, _} = statistics(runtime),
    T0 = erlang:monotonic_time(microsecond),
    case Bytes of
        0 -> send_loop(Target, 0, N);
        _ -> send_loop_bin(Target, Payload, N)
    end,
    receive {done, N} -> ok end,
    T1 = erlang:monotonic_time(microsecond),
    {R1, _} = statistics(runtime),
    {N * 1000000 / (T1 - T0), (R1 - R0) * 1000000 / N}.

send_loop(_, N, N) -> ok;
send_loop(T, I, N) -> {bench_sink, T} ! {m, I}, send_loop(T, I + 1, N).

send_loop_bin(_, _, 0) -> ok;
send_loop_bin(T, P, K) -> {bench_sink, T} ! {m, P}, send_loop_bin(T, P, K - 1).
