%% term_beam: the BEAM's own figures for the work bench/bench_term.c measures
%% in C (canonical bytes by term_to_binary(binary_to_term(B), [deterministic]),
%% erlang:phash2/1 for a key). Prints lines `term_beam.<metric> <value> <unit>`
%% with the same metric names as `term.<metric>` where the work is the same.
%% Run: erlc -o build/bench bench/term_beam.erl &&
%%      erl -noshell -pa build/bench -eval 'term_beam:run(), halt().'
-module(term_beam).

-export([run/0]).

-define(OPTS, [{minor_version, 2}, deterministic]).

-spec run() -> ok.
run() ->
    Big = term_to_binary(binary:copy(<<"0123456789abcdef">>, 2 * 1024 * 1024)),
    mbps("canonical_large_binary", fun() -> term_to_binary(binary_to_term(Big), ?OPTS) end,
         byte_size(Big)),
    mbps("hash_large_binary", fun() -> erlang:phash2(Big) end, byte_size(Big)),

    Mixed = mixed(),
    Canon = term_to_binary(Mixed, ?OPTS),
    Other = term_to_binary(Mixed, [{minor_version, 0}]),
    mbps("canonical_mixed_canonical_input",
         fun() -> term_to_binary(binary_to_term(Canon), ?OPTS) end, byte_size(Canon)),
    mbps("canonical_mixed_other_encoding",
         fun() -> term_to_binary(binary_to_term(Other), ?OPTS) end, byte_size(Other)),

    Key = term_to_binary({cache, 42}, ?OPTS),
    OldKey = <<131, 104, 2, 100, 0, 5, "cache", 98, 0, 0, 0, 42>>,
    ns("canonical_small_key_ei", fun() -> term_to_binary(binary_to_term(Key), ?OPTS) end),
    ns("canonical_small_key_other_encoding",
       fun() -> term_to_binary(binary_to_term(OldKey), ?OPTS) end),
    T = binary_to_term(Key),
    ns("hash_small_key", fun() -> erlang:phash2(T) end),
    ns("canonical_and_hash_small_key", fun() -> erlang:phash2(binary_to_term(Key)) end),
    T2 = {cache, 43},
    ns("compare_small_keys", fun() -> T < T2 end),
    ok.

%% The same records as mixed_term() in bench_term.c.
mixed() ->
    [{user, 100000 + I, I * 0.5, list_to_binary([(I + K) band 255 || K <- lists:seq(0, 31)]),
      "abc", #{name => bob, age => 33}}
     || I <- lists:seq(0, 19999)].

%% Calls F in a loop for about Secs; returns seconds per call.
per_call(F, Secs) ->
    per_call(F, Secs, 1).

per_call(F, Secs, N) ->
    T0 = erlang:monotonic_time(),
    loop(F, N),
    Dt = erlang:convert_time_unit(erlang:monotonic_time() - T0, native, nanosecond) / 1.0e9,
    if
        Dt >= Secs -> Dt / N;
        Dt > 0.001 -> per_call(F, Secs, trunc(N * Secs / Dt * 1.1) + 1);
        true -> per_call(F, Secs, N * 10)
    end.

loop(_, 0) -> ok;
loop(F, N) -> _ = F(), loop(F, N - 1).

mbps(Name, F, Bytes) ->
    S = per_call(F, 0.5),
    io:format("term_beam.~s ~w MB/s~n", [Name, round(Bytes / S / 1.0e6)]).

ns(Name, F) ->
    S = per_call(F, 0.3),
    io:format("term_beam.~s ~.1f ns~n", [Name, S * 1.0e9]).
