%% runtime_bench: the BEAM-side drivers of the process-runtime figures (run by
%% bench_run on a private cluster): gen_server:call round trips, one-way
%% messages to one worker, memory of idle workers, each for a C worker and for
%% an Erlang process on another node.
-module(runtime_bench).
-export([call_rtt_us/2, to_worker_msgs_per_s/2, to_worker_msgs_per_s/3, beam_count_server/0,
         idle_beam_bytes/1, start_idle_c/2]).
-export([call_latency_us/3, pipelined_calls_per_s/3]).

%% Median of N sequential gen_server:call round trips, in microseconds.
-spec call_rtt_us(term(), pos_integer()) -> float().
call_rtt_us(Dest, N) ->
    _ = [gen_server:call(Dest, {echo, warm}) || _ <- lists:seq(1, 100)],
    Ts = [begin
              T0 = erlang:monotonic_time(nanosecond),
              _ = gen_server:call(Dest, {echo, I}),
              erlang:monotonic_time(nanosecond) - T0
          end || I <- lists:seq(1, N)],
    lists:nth(N div 2, lists:sort(Ts)) / 1000.

%% N messages {m, I} to a worker that replies to {count, N} once it has them.
-spec to_worker_msgs_per_s(pid(), pos_integer()) -> float().
to_worker_msgs_per_s(Worker, N) -> to_worker_msgs_per_s(Worker, N, 0).

%% The same with messages {m, Payload}, Payload a binary of Bytes bytes (the
%% integer I when Bytes is 0).
-spec to_worker_msgs_per_s(pid(), pos_integer(), non_neg_integer()) -> float().
to_worker_msgs_per_s(Worker, N, Bytes) ->
    Payload = binary:copy(<<"x">>, Bytes),
    Self = self(),
    T0 = erlang:monotonic_time(microsecond),
    spawn_link(fun() -> Self ! {counted, gen_server:call(Worker, {count, N}, infinity)} end),
    timer:sleep(50), % the count request first
    T1 = erlang:monotonic_time(microsecond),
    _ = case Bytes of
            0 -> [Worker ! {m, I} || I <- lists:seq(1, N)];
            _ -> [Worker ! {m, Payload} || _ <- lists:seq(1, N)]
        end,
    receive {counted, ok} -> ok end,
    _ = T0,
    N * 1000000 / (erlang:monotonic_time(microsecond) - T1).

%% An Erlang process with the same {count, N} protocol as the C probe.
-spec beam_count_server() -> pid().
beam_count_server() ->
    spawn(fun() -> count_loop() end).

count_loop() ->
    receive
        {'$gen_call', From, {count, N}} -> count(N), gen_server:reply(From, ok), count_loop();
        {'$gen_call', From, {echo, X}} -> gen_server:reply(From, X), count_loop()
    end.

count(0) -> ok;
count(N) -> receive {m, _} -> count(N - 1) end.

%% Bytes per idle gen_server process (erlang:memory(processes) delta).
-spec idle_beam_bytes(pos_integer()) -> float().
idle_beam_bytes(N) ->
    erlang:garbage_collect(),
    M0 = erlang:memory(processes),
    Ps = [element(2, gen_server:start(cnb_test_server, [], [])) || _ <- lists:seq(1, N)],
    M1 = erlang:memory(processes),
    [exit(P, kill) || P <- Ps],
    (M1 - M0) / N.

%% Starts N idle C workers (probes: a worker with a small state, no names),
%% the counterpart of an idle gen_server.
-spec start_idle_c(node(), pos_integer()) -> ok.
start_idle_c(CN, N) ->
    _ = [{ok, _} = gen_server:call({probe, CN}, spawn) || _ <- lists:seq(1, N)],
    ok.

%% Callers processes at once, each making Calls sequential gen_server:call
%% round trips to Dest; every call's own time is a sample. Returns the p50 and
%% p99 of all samples in microseconds.
-spec call_latency_us(term(), pos_integer(), pos_integer()) -> #{p50 := float(), p99 := float()}.
call_latency_us(Dest, Callers, Calls) ->
    Self = self(),
    Go = make_ref(),
    Pids = [spawn_link(fun() ->
                               _ = [gen_server:call(Dest, {echo, warm}) || _ <- lists:seq(1, 20)],
                               Self ! {ready, self()},
                               receive Go -> ok end,
                               Self ! {samples, self(), call_samples(Dest, Calls, [])}
                       end) || _ <- lists:seq(1, Callers)],
    [receive {ready, P} -> ok end || P <- Pids],
    [P ! Go || P <- Pids],
    Ts = lists:append([receive {samples, P, S} -> S end || P <- Pids]),
    #{p50 => bench_stats:percentile(Ts, 50) / 1000, p99 => bench_stats:percentile(Ts, 99) / 1000}.

call_samples(_Dest, 0, Acc) -> Acc;
call_samples(Dest, K, Acc) ->
    T0 = erlang:monotonic_time(nanosecond),
    _ = gen_server:call(Dest, {echo, K}),
    call_samples(Dest, K - 1, [erlang:monotonic_time(nanosecond) - T0 | Acc]).

%% Pipelined request/response: N calls {echo, I} to Dest from one process with
%% at most Window of them outstanding (raw '$gen_call' messages, replies
%% matched by reference); completed calls per second.
-spec pipelined_calls_per_s(term(), pos_integer(), pos_integer()) -> float().
pipelined_calls_per_s(Dest, N, Window) ->
    T0 = erlang:monotonic_time(microsecond),
    Q = queue:from_list([request(Dest, I) || I <- lists:seq(1, min(Window, N))]),
    ok = pipeline(Dest, min(Window, N) + 1, N, Q),
    N * 1000000 / max(1, erlang:monotonic_time(microsecond) - T0).

request(Dest, I) ->
    Ref = make_ref(),
    Dest ! {'$gen_call', {self(), Ref}, {echo, I}},
    Ref.

pipeline(Dest, Next, N, Q0) ->
    case queue:out(Q0) of
        {empty, _} -> ok;
        {{value, Ref}, Q1} ->
            receive {Ref, _} -> ok after 30000 -> erlang:error(pipeline_timeout) end,
            Q = case Next =< N of
                    true -> queue:in(request(Dest, Next), Q1);
                    false -> Q1
                end,
            pipeline(Dest, Next + 1, N, Q)
    end.
