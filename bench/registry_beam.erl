%% registry_beam.erl: the BEAM's own figures for the work bench/bench_registry.c
%% measures: an ETS set (read_concurrency) of {Key, {Pid, Value}} rows with
%% Key = {cache, I}: lookups per second in random order at 1k, 100k and 1M rows,
%% one key at a time and in lists of 64 (alone and with a writer process);
%% memory per row; insert + delete pairs per second (as
%% registry_beam.register_unregister_per_s, beside core's register +
%% unregister pairs). Prints `registry_beam.<metric> <value> <unit>`. Run by `make bench`:
%%   erlc -o /tmp bench/registry_beam.erl && erl -noshell -pa /tmp -s registry_beam run -s init stop
-module(registry_beam).
-export([run/0, batches/1]).

-define(LOOKUPS, 3000000).
-define(BATCH, 64).

-spec run() -> ok.
run() ->
    lists:foreach(fun size_run/1, [{1000, "1k"}, {100000, "100k"}, {1000000, "1m"}]).

size_run({N, Label}) ->
    T = ets:new(bench, [set, public, {read_concurrency, true}]),
    Self = self(),
    [ets:insert(T, {{cache, I}, {Self, 42}}) || I <- lists:seq(0, N - 1)],
    Order = shuffle(lists:seq(0, N - 1)),
    Keys = list_to_tuple([{cache, I} || I <- Order]),
    _ = lookups(T, Keys, min(N, 100000)),
    Lps = lookups(T, Keys, ?LOOKUPS),
    out("lookups_per_s_" ++ Label, Lps, "ops/s"),
    Batches = batches([{cache, I} || I <- Order]),
    out("batched_lookups_per_s_" ++ Label, batched(T, Batches, ?LOOKUPS), "ops/s"),
    {Writer, Ref} = spawn_monitor(fun() -> writer(T, 0) end),
    LpsW = lookups(T, Keys, ?LOOKUPS),
    BLpsW = batched(T, Batches, ?LOOKUPS),
    exit(Writer, kill),
    receive
        {'DOWN', Ref, process, Writer, _} -> ok
    end,
    out("lookups_per_s_" ++ Label ++ "_with_writer", LpsW, "ops/s"),
    out("batched_lookups_per_s_" ++ Label ++ "_with_writer", BLpsW, "ops/s"),
    case N of
        1000000 ->
            Words = ets:info(T, memory),
            Bytes = Words * erlang:system_info(wordsize),
            out("bytes_per_entry", Bytes / ets:info(T, size), "bytes");
        100000 ->
            Pairs = 500000,
            {Us, _} = timer:tc(fun() -> pairs(T, Self, 0, Pairs) end),
            out("register_unregister_per_s", Pairs / (Us / 1.0e6), "pairs/s");
        _ ->
            ok
    end,
    ets:delete(T),
    ok.

lookups(T, Keys, M) ->
    Size = tuple_size(Keys),
    {Us, Found} = timer:tc(fun() -> lookup_loop(T, Keys, Size, 0, M, 0) end),
    case Found of
        M -> ok;
        _ -> io:format(standard_error, "found ~p of ~p~n", [Found, M])
    end,
    M / (Us / 1.0e6).

lookup_loop(_T, _Keys, _Size, M, M, Found) ->
    Found;
lookup_loop(T, Keys, Size, I, M, Found) ->
    Key = element(I rem Size + 1, Keys),
    case ets:lookup(T, Key) of
        [_] -> lookup_loop(T, Keys, Size, I + 1, M, Found + 1);
        [] -> lookup_loop(T, Keys, Size, I + 1, M, Found)
    end.

%% The same keys in lists of ?BATCH (the C side's batch size), each list looked
%% up by one list comprehension: ETS has no multi-key lookup, so this is the
%% BEAM's own way to look up a batch.
%% The lists form a tuple; a tail shorter than ?BATCH is left out. nif_beam
%% uses this too.
-spec batches([term()]) -> tuple().
batches(Keys) ->
    list_to_tuple(chunks(Keys, length(Keys) div ?BATCH)).

chunks(_Keys, 0) ->
    [];
chunks(Keys, N) ->
    {B, Rest} = lists:split(?BATCH, Keys),
    [B | chunks(Rest, N - 1)].

batched(T, Batches, M) ->
    N = tuple_size(Batches),
    Rounds = M div ?BATCH,
    {Us, Found} = timer:tc(fun() -> batch_loop(T, Batches, N, 0, Rounds, 0) end),
    case Found of
        _ when Found =:= Rounds * ?BATCH -> ok;
        _ -> io:format(standard_error, "found ~p of ~p~n", [Found, Rounds * ?BATCH])
    end,
    Rounds * ?BATCH / (Us / 1.0e6).

batch_loop(_T, _Batches, _N, R, R, Found) ->
    Found;
batch_loop(T, Batches, N, I, R, Found) ->
    Rows = [ets:lookup(T, K) || K <- element(I rem N + 1, Batches)],
    batch_loop(T, Batches, N, I + 1, R, Found + length(lists:append(Rows))).

writer(T, I) ->
    Key = {cache, 16#80000000 + I rem 1000},
    ets:insert(T, {Key, {self(), 42}}),
    ets:delete(T, Key),
    writer(T, I + 1).

pairs(_T, _Pid, N, N) ->
    ok;
pairs(T, Pid, I, N) ->
    Key = {cache, 16#40000000 + I rem 50000},
    ets:insert(T, {Key, {Pid, 42}}),
    ets:delete(T, Key),
    pairs(T, Pid, I + 1, N).

shuffle(L) ->
    rand:seed(exsss, {1, 2, 3}),
    [X || {_, X} <- lists:sort([{rand:uniform(), X} || X <- L])].

out(Metric, Value, Unit) ->
    io:format("registry_beam.~s ~.1f ~s~n", [Metric, float(Value), Unit]).
