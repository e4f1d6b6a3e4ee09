%% bench_report: writes the report of `make bench` (docs/BENCHMARKS.md on a
%% full run): the machine it ran on, the targets of issue 19 met or not, each C
%% figure beside the BEAM's own with their ratio, all figures, what each pair
%% measures, the plots; sections written by hand (any other "## " heading) are
%% kept after the generated ones. Also the targets table alone, for
%% `make bench-quick`.
-module(bench_report).
-export([write/5, targets_table/2, fmt/1]).

-type figure() :: {string(), number(), string()}.
-type rounds() :: #{string() => [{number(), number()}]}.

%% {Target, C figure, BEAM figure, Op, Limit}: met when C/BEAM Op Limit.
targets() ->
    Rtt = [{io_lib:format("call round trip ~s, ~b caller~s <= 1.0x a remote gen_server's",
                          [P, K, case K of 1 -> ""; _ -> "s" end]),
            "call_" ++ P ++ "_us_" ++ integer_to_list(K) ++ "c", '=<', 1.0}
           || K <- [1, 8, 64], P <- ["p50", "p99"]],
    Lk = [{io_lib:format("NIF lookups at ~s keys >= 2x Registry.lookup/2", [S]),
           "nif_lookups_per_s_" ++ S, '>=', 2.0} || S <- ["1k", "100k", "1m"]],
    Ets = [{io_lib:format("NIF lookups at ~s keys >= 1x :ets.lookup/2", [S]),
            "target_ets.nif_lookups_per_s_" ++ S, '>=', 1.0} || S <- ["1k", "100k", "1m"]],
    Rtt ++
        [{"messages/s into one C worker >= 1.5x BEAM->BEAM", "to_worker_msgs_per_s", '>=', 1.5},
         {"pipelined request/response >= 1.5x BEAM->BEAM", "pipelined_calls_per_s", '>=', 1.5},
         {"C->BEAM small messages/s >= 1.0x BEAM->BEAM", "to_beam_msgs_per_s", '>=', 1.0},
         {"sender CPU per message <= 0.5x BEAM's", "sender_cpu_ns_per_msg", '=<', 0.5},
         {"worker start + :global name <= 1.2x an Erlang process's", "start_global_us", '=<', 1.2},
         {"worker start + :global name, visible C node <= 1.0x an Erlang process's",
          "start_global_visible_us", '=<', 1.0},
         {"name gone after the owner exits <= 2x BEAM's", "gone_after_exit_us", '=<', 2.0}]
        ++ Lk ++ Ets ++
        [{"idle C worker memory <= 0.5x an idle Erlang process's", "idle_worker_bytes", '=<', 0.5}].

%% Metric "m" is target.m vs target_beam.m; "g.m" is g.m vs g_beam.m.
keys(M) ->
    case string:split(M, ".") of
        [G, Rest] -> {G ++ "." ++ Rest, G ++ "_beam." ++ Rest, G ++ "_rounds." ++ Rest};
        [_] -> {"target." ++ M, "target_beam." ++ M, "target_rounds." ++ M}
    end.

%% The targets table (markdown) for the figures there are; targets without
%% figures are left out. Ratio: C / BEAM of the medians.
-spec targets_table([figure()], rounds()) -> iolist().
targets_table(Figures, Rounds) ->
    Map = maps:from_list([{K, {V, U}} || {K, V, U} <- Figures]),
    Rows = [row(T, CV, BV, U, Op, Lim, maps:get(RK, Rounds, []))
            || {T, M, Op, Lim} <- targets(),
               {CK, BK, RK} <- [keys(M)],
               {CV, U} <- [maps:get(CK, Map, {undefined, ""})], CV =/= undefined,
               {BV, _} <- [maps:get(BK, Map, {undefined, ""})], BV =/= undefined],
    case Rows of
        [] -> [];
        _ -> ["| target | C (median) | BEAM (median) | C / BEAM | C / BEAM by round | met? |\n"
              "|---|---|---|---|---|---|\n" | Rows]
    end.

row(T, CV, BV, U, Op, Lim, Rounds) ->
    R = case BV of
            0 -> undefined;
            _ -> CV / BV
        end,
    Met = case R of
              undefined -> "n/a";
              _ when Op =:= '>=', R >= Lim; Op =:= '=<', R =< Lim -> "**met**";
              _ -> "not met"
          end,
    Spread = case [C / B || {C, B} <- Rounds, B /= 0] of
                 [] -> "-";
                 Rs -> fmt(lists:min(Rs)) ++ "-" ++ fmt(lists:max(Rs)) ++ " ("
                           ++ integer_to_list(length(Rs)) ++ " rounds)"
             end,
    io_lib:format("| ~s | ~s ~s | ~s ~s | ~s | ~s | ~s |~n",
                  [T, fmt(CV), U, fmt(BV), U, case R of undefined -> "n/a"; _ -> fmt(R) ++ "x" end,
                   Spread, Met]).

%% The report header: when, on what.
header(Machine) ->
    {{Y, Mo, D}, {H, Mi, _}} = calendar:universal_time(),
    #{cpu := Cpu, cores := Cores, otp := Otp, kernel := K, load := L} = Machine,
    io_lib:format("Run: ~4..0b-~2..0b-~2..0b ~2..0b:~2..0b UTC on ~s: ~s, ~s cores, ~s; OTP ~s;"
                  " load average at start ~s (1, 5, 15 min).~n~n",
                  [Y, Mo, D, H, Mi, os_name(), Cpu, Cores, K, Otp, L]).

fmt(V) when is_integer(V) -> integer_to_list(V);
fmt(V) when V >= 100 -> integer_to_list(round(V));
fmt(V) -> float_to_list(V, [{decimals, 2}]).

higher_is_better(Unit) -> lists:suffix("/s", Unit).

%% Writes the report to Path; Plots: the PNGs drawn (paths under Root).
-spec write(file:filename(), file:filename(), [figure()], rounds(), map()) -> ok.
write(Root, Path, Figures, Rounds, #{machine := Machine, plots := Plots}) ->
    Map = maps:from_list([{K, {V, U}} || {K, V, U} <- Figures]),
    Pairs = lists:sort(
              [{K, V, U, BV}
               || {K, V, U} <- Figures,
                  [G, M] <- [string:split(K, ".")],
                  not lists:suffix("_beam", G),
                  {BV, _} <- [maps:get(G ++ "_beam." ++ M, Map, {undefined, x})],
                  BV =/= undefined]),
    Rows = [io_lib:format("| `~s` | ~s ~s | ~s ~s | ~s | ~s |~n",
                          [K, fmt(V), U, fmt(BV), U, ratio(V, BV, U),
                           spread([{C, B, U} || {C, B} <- maps:get(rounds_key(K), Rounds, [])])])
            || {K, V, U, BV} <- Pairs],
    All = [io_lib:format("| `~s` | ~s | ~s |~n", [K, fmt(V), U]) || {K, V, U} <- Figures],
    Text = [<<"# Benchmarks\n\n">>,
            <<"Written by `make bench` (bench/bench_run.erl); do not edit by hand. Each C figure\n"
              "stands beside the BEAM's own equivalent measured in the same run on the same\n"
              "machine. *Ours vs BEAM* is how many times better ours is (above 1: ours wins;\n"
              "for times and bytes lower is better, for rates higher is better). Figures\n"
              "named `target*` come from alternating rounds (C, BEAM, BEAM, C, ...) and are\n"
              "medians over the rounds.\n\n">>,
            header(Machine),
            <<"## Targets (issue 19)\n\n"
              "*C / BEAM* is the C median over the BEAM median (for times and bytes lower is\n"
              "better, for rates higher); the by-round column shows the spread of the\n"
              "same ratio in each round. A target is met when the ratio of the medians is\n"
              "on the right side of its limit. For each target not met, what bounds it and\n"
              "the figure reached here: \"Targets not met\" below.\n\n">>,
            case targets_table(Figures, Rounds) of
                [] -> <<"No target figures in this run (section `targets` not run).\n">>;
                T -> T
            end,
            <<"\n## Plots\n\n">>,
            case Plots of
                {ok, [_ | _] = Pngs} ->
                    [io_lib:format("![~s](~s)~n~n", [filename:basename(P, ".png"),
                                                      rel(Root, Path, P)]) || P <- Pngs];
                {ok, []} -> <<"No plot: this run has none of their figures.\n\n">>;
                {no_gnuplot, _} -> <<"No plots: gnuplot is not installed (Debian: gnuplot-nox;"
                                     " scripts/install-deps installs it).\n\n">>;
                {gnuplot_failed, _} -> <<"No plots: gnuplot failed (see the run's output).\n\n">>
            end,
            <<"## Side by side\n\nMedians over the rounds (`BENCH_ROUNDS`, default 3: every section runs\n"
              "once a round, so each C figure and its BEAM pair alternate); the last column\n"
              "is the lowest and highest *ours vs BEAM* of single rounds.\n\n"
              "| metric | ours (C) | BEAM | ours vs BEAM | by round |\n|---|---|---|---|---|\n">>,
            Rows,
            <<"\n## All figures\n\n| figure | value | unit |\n|---|---|---|\n">>, All,
            <<"\n## What each pair measures\n\n">>,
            <<"- `dist.connect_setup_us`: median time from asking for a connection to an Erlang\n"
              "  node until it is up (epmd lookup, TCP, handshake): C node vs a hidden Erlang node\n"
              "  calling `net_kernel:connect_node/1`.\n"
              "- `dist.to_beam_msgs_per_s`: small messages `{m, I}` sent one way to one\n"
              "  registered BEAM process, until it has counted them all: from a C thread vs from\n"
              "  an Erlang process on another node.\n"
              "- `dist.sender_cpu_ns_per_msg`: CPU time of the sending OS process (all its\n"
              "  threads) per message over the same run.\n"
              "- `tls.*`: the same `dist` figures and `runtime.call_rtt_us` with every node on\n"
              "  TLS distribution (`-proto_dist inet_tls`, the C node with `--tls-cert`; TLS 1.2,\n"
              "  ECDSA P-256 certificates, verification both ways).\n"
              "- `runtime.call_rtt_us`: median `gen_server:call` round trip from an Erlang\n"
              "  node to a C worker (`echo`) vs to an Erlang process on another node.\n"
              "- `runtime.to_worker_msgs_per_s`: one-way messages from an Erlang process to\n"
              "  one C worker (the `probe`'s `{count, N}`) vs to one Erlang process on another\n"
              "  node, until all are received.\n"
              "- `runtime.idle_worker_bytes`: resident memory per idle C worker (a `probe`:\n"
              "  RSS of the cnode process over 10,000 of them) vs `erlang:memory(processes)`\n"
              "  per idle gen_server.\n"
              "- `nif.lookups_per_s_*` / `nif.register_unregister_per_s_*`: `:cnode_registry`\n"
              "  vs Elixir's `Registry` (unique keys `{cache, I}`, random order, 1 and 2\n"
              "  processes).\n"
              "- `nif.batched_lookups_per_s_*`: the same keys in lists of 64:\n"
              "  `:cnode_registry.lookup_many/2` vs one `Registry.lookup/2` per key.\n"
              "- `registry.lookups_per_s_*`: core/registry from C, one key per\n"
              "  `cnb_registry_lookup` call, vs `ets:lookup/2` on an ETS set of the same\n"
              "  `{Key, {Pid, Value}}` rows (1k, 100k, 1M entries; random order; alone and\n"
              "  with a writer thread or process registering and unregistering).\n"
              "- `registry.batched_lookups_per_s_*`: the same, 64 keys per\n"
              "  `cnb_registry_lookup_many` call vs one `ets:lookup/2` per key of the list\n"
              "  (ETS has no multi-key lookup).\n"
              "- `registry.dependent_load_ns_128mb`: for scale, one random memory read\n"
              "  that waits for the previous one, over 128 MB: a one-key lookup in a big\n"
              "  registry waits for two of these (table slot, then entry).\n"
              "- `global.register_N_names_ms`: N global names taken one after another by a C\n"
              "  worker through the C API (each is a call into the C node, which runs\n"
              "  `global:register_name/3` on a connected Erlang node) vs by an Erlang process\n"
              "  calling `global:register_name/2` itself.\n"
              "- `global.gone_after_exit_us`: from `exit(Pid, kill)` of the owner to the name\n"
              "  being gone on another node: a C worker vs an Erlang process.\n"
              "- `global.gone_after_kill9_us`: the same after `kill -9` of the owner's OS\n"
              "  process: the C node vs an Erlang node.\n"
              "- `term_paths.*_ns`, `nif_term_paths.*_ns` (no BEAM pair; under All figures):\n"
              "  the term fast paths per input (bench/bench_term_paths.c,\n"
              "  bench/bench_nif_term.c); see Term reader cost (issue 14) below.\n"
              "- `target.call_p50_us_Kc`, `target.call_p99_us_Kc`: K processes on one Erlang\n"
              "  node each making sequential `gen_server:call`s at once; p50 and p99 of every\n"
              "  call's own time: to the C node's `echo` worker vs to an Erlang process on\n"
              "  another node (bench/bench_targets.erl, runtime_bench:call_latency_us/3).\n"
              "- `target.to_worker_msgs_per_s`: as `runtime.to_worker_msgs_per_s`, in rounds.\n"
              "- `target.pipelined_calls_per_s`: `{echo, I}` calls from one process with 64\n"
              "  outstanding at a time, replies matched by reference; completed per second.\n"
              "- `target.to_beam_msgs_per_s`, `target.sender_cpu_ns_per_msg`: as the `dist.*`\n"
              "  pair, in rounds, the BEAM sender on a visible node.\n"
              "- `target.start_global_us`: median time of one `{start, Id, x}` call to the C\n"
              "  node's `cache_sup` (a new worker that takes `{cache, Id}` in `:global`) vs\n"
              "  to `beam_cache_sup`, an Erlang process doing the same on an Erlang node.\n"
              "- `target.start_global_visible_us`: the same with a visible C node (`--visible`,\n"
              "  issue 20): its registrar takes the name through global's protocol, no anchor;\n"
              "  the BEAM side in that cluster, where the C node is one more known node.\n"
              "- `target.whereis_ns`: one `cnb_global_whereis` on the visible C node (its own\n"
              "  name table; N in a row, timed in C) vs one `global:whereis_name/1` on an\n"
              "  Erlang node; `target_hidden.whereis_ns`: the hidden node's (a rex round trip).\n"
              "- `target.gone_after_exit_us`: as `global.gone_after_exit_us`, in rounds, each round\n"
              "  the median of 7 exits.\n"
              "- `target.nif_lookups_per_s_S`: `:cnode_registry.lookup/2` vs\n"
              "  `Registry.lookup/2` (`target_beam`) and vs `:ets.lookup/2` (`target_ets_beam`)\n"
              "  at S keys, one process, the three in turn each round.\n"
              "- `target.idle_worker_bytes`: as `runtime.idle_worker_bytes` (one round).\n"
              "- `plot_to_beam.*_Bb`, `plot_to_c.*_Bb`: messages `{m, <<B bytes>>}` one way,\n"
              "  C->BEAM vs BEAM->BEAM, and BEAM->C worker vs BEAM->Erlang process.\n">>],
    Kept = case filelib:is_regular(Path) of
               true -> kept_sections(Path);
               false -> kept_sections(filename:join([Root, "docs", "BENCHMARKS.md"]))
           end,
    ok = filelib:ensure_dir(Path),
    file:write_file(Path, [Text, Kept]).

rounds_key(K) ->
    [G, M] = string:split(K, "."),
    G ++ "_rounds." ++ M.

spread([]) -> "-";
spread(Rs) ->
    Ratios = [ratio_num(C, B, U) || {C, B, U} <- Rs, C /= 0, B /= 0],
    case Ratios of
        [] -> "-";
        _ -> fmt(lists:min(Ratios)) ++ "-" ++ fmt(lists:max(Ratios)) ++ "x"
    end.

ratio_num(V, BV, U) ->
    case higher_is_better(U) of
        true -> V / BV;
        false -> BV / V
    end.

%% P relative to the report's directory (both under Root).
rel(_Root, Path, P) ->
    Dir = filename:split(filename:dirname(filename:absname(Path))),
    To = filename:split(filename:absname(P)),
    rel_(Dir, To).

rel_([D | Ds], [D | Ts]) -> rel_(Ds, Ts);
rel_(Ds, Ts) -> filename:join([".." || _ <- Ds] ++ Ts).

%% The sections written by hand (a "## " heading other than the generated
%% ones) are kept, after the generated ones.
kept_sections(Path) ->
    case file:read_file(Path) of
        {ok, Old} ->
            [_ | Parts] = binary:split(Old, <<"\n## ">>, [global]),
            [[<<"\n## ">>, P] || P <- Parts, not generated_section(P)];
        {error, _} ->
            []
    end.

generated_section(P) ->
    lists:any(fun(T) -> binary:longest_common_prefix([P, T]) =:= byte_size(T) end,
              [<<"Side by side\n">>, <<"All figures\n">>, <<"What each pair measures\n">>,
               <<"Targets (issue 19)\n">>, <<"Plots\n">>]).

ratio(_, 0, _) -> "n/a";
ratio(0, _, _) -> "n/a";
ratio(V, BV, U) ->
    float_to_list(float(ratio_num(V, BV, U)), [{decimals, 2}]) ++ "x".

os_name() ->
    case file:read_file("/etc/os-release") of
        {ok, B} ->
            case re:run(B, "PRETTY_NAME=\"([^\"]+)\"", [{capture, all_but_first, list}]) of
                {match, [N]} -> N;
                _ -> "linux"
            end;
        _ -> "unknown"
    end.
