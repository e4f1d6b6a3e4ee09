%% bench_run: `make bench`. Runs every C benchmark (build/bench/bench_*) and its
%% BEAM counterpart (bench/*_beam.erl, function run/0) in one run, plus the
%% distribution benchmarks on a private cluster, and writes docs/BENCHMARKS.md
%% with each C figure beside the BEAM's own and their ratio. Figures are
%% "<group>.<metric> <value> <unit>" lines; group G pairs with group G_beam.
-module(bench_run).
-export([main/0]).

-define(MESSAGES, 200000).
-define(CONNECTS, 21).

main() ->
    Root = cnb_cluster:root(),
    Machine = bench_stats:machine(),
    io:format("bench: ~s, ~s cores, ~s, OTP ~s, load average ~s~n",
              [maps:get(K, Machine) || K <- [cpu, cores, kernel, otp, load]]),
    %% BENCH_ONLY=dist,global runs only those sections (BENCH_TARGETS=calls,idle
    %% picks groups of the targets section; see bench_targets) (for a quick look; the
    %% report then goes to build/bench/BENCHMARKS.md). BENCH_QUICK=1 (make
    %% bench-quick): the targets section alone with few rounds and small
    %% counts, the targets table printed, the report in
    %% build/bench/BENCHMARKS-quick.md. BENCH_OUT=path: the report there.
    Quick = os:getenv("BENCH_QUICK", "") =/= "",
    Params = bench_targets:params(case Quick of true -> quick; false -> full end),
    Sections = [{c, fun c_benches/1}, {beam, fun beam_benches/1}, {dist, fun dist/1},
                {runtime, fun runtime/1}, {global, fun global/1}, {tls, fun tls/1},
                {targets, fun(R) -> bench_targets:run(R, Params) end}],
    All = [N || {N, _} <- Sections],
    Only = case {Quick, os:getenv("BENCH_ONLY")} of
               {true, _} -> [targets];
               {false, false} -> All;
               {false, S} -> [list_to_atom(X) || X <- string:lexemes(S, ",")]
           end,
    Full = Only =:= All,
    %% The sections other than targets (which alternates inside) run
    %% BENCH_ROUNDS times (default 3), all of them in each round, so each C
    %% figure and its BEAM pair alternate; the report has their medians.
    NRounds = list_to_integer(os:getenv("BENCH_ROUNDS", "3")),
    Repeated = [{N, F} || {N, F} <- Sections, N =/= targets, lists:member(N, Only)],
    PerRound = [begin
                    io:format(standard_error, "bench: round ~b of ~b~n", [I, NRounds]),
                    lists:append([parse(L) || {_, F} <- Repeated, L <- F(Root)])
                end || I <- lists:seq(1, case Repeated of [] -> 0; _ -> NRounds end)],
    {MFigs, MRounds} = merge_rounds(PerRound),
    Lines = lists:append([F(Root) || {targets, F} <- Sections, lists:member(targets, Only)]),
    Figures = MFigs ++ lists:append([parse(L) || L <- Lines]),
    Rounds = maps:merge(MRounds, maps:from_list(lists:append([parse_rounds(L) || L <- Lines]))),
    [io:format("~s ~s ~s~n", [K, bench_report:fmt(V), U]) || {K, V, U} <- Figures],
    Out = case {os:getenv("BENCH_OUT"), Full, Quick} of
              {false, true, _} -> filename:join([Root, "docs", "BENCHMARKS.md"]);
              {false, false, true} -> filename:join([Root, "build", "bench", "BENCHMARKS-quick.md"]);
              {false, false, false} -> filename:join([Root, "build", "bench", "BENCHMARKS.md"]);
              {P, _, _} -> P
          end,
    PlotDir = case Full of
                  true -> filename:join(Root, "docs");
                  false -> filename:join([Root, "build", "bench", "plots"])
              end,
    Plots = bench_plots:write(Root, Figures, PlotDir),
    _ = case Plots of
            {no_gnuplot, _} -> io:format("bench: gnuplot not found: no plots drawn (Debian: "
                                         "apt-get install gnuplot-nox, or scripts/install-deps)~n");
            {gnuplot_failed, _} -> io:format("bench: gnuplot failed: no plots drawn~n");
            {ok, Pngs} -> [io:format("bench: plot ~s~n", [P]) || P <- Pngs]
        end,
    ok = bench_report:write(Root, Out, Figures, Rounds, #{machine => Machine, plots => Plots}),
    case bench_report:targets_table(Figures, Rounds) of
        [] -> ok;
        T -> io:format("~nTargets (C / BEAM, medians of alternating rounds):~n~s~n", [T])
    end,
    io:format("wrote ~s~n", [Out]),
    halt(0).

c_benches(Root) ->
    Bins = filelib:wildcard(filename:join([Root, "build", "bench", "bench_*"])),
    lists:append([run_cmd(B) || B <- lists:sort(Bins), filename:basename(B) =/= "bench_dist",
                                filelib:is_regular(B), filename:extension(B) =:= ""]).

beam_benches(Root) ->
    Mods = [filename:basename(F, ".erl")
            || F <- filelib:wildcard(filename:join([Root, "bench", "*_beam.erl"]))],
    Ebin = filename:join([Root, "build", "bench", "ebin"]),
    lists:append([run_cmd("erl -noshell -pa " ++ Ebin ++ " -eval '" ++ M ++ ":run(), halt().'")
                  || M <- lists:sort(Mods), M =/= "dist_beam"]).

run_cmd(Cmd) ->
    io:format(standard_error, "bench: ~s~n", [Cmd]),
    string:split(os:cmd(Cmd), "\n", all).

dist(Root) ->
    C = cnb_cluster:new(),
    try
        Ebin = filename:join([Root, "build", "bench", "ebin"]),
        {ok, A, NA} = cnb_cluster:start_node(C, #{name => "sink", args => ["-pa", Ebin]}),
        {ok, B, _} = cnb_cluster:start_node(C, #{name => "sender", args => ["-pa", Ebin, "-hidden"]}),
        ok = cnb_cluster:call(A, dist_beam, start_sink, []),
        Exe = filename:join([Root, "build", "bench", "bench_dist"]),
        {ok, Port, _} = cnb_cluster:start_cnode(
                          C, {[cnb_cluster:unique_name("benchc"), cnb_cluster:cookie(C),
                               atom_to_list(NA), integer_to_list(?CONNECTS),
                               integer_to_list(?MESSAGES)],
                              #{exe => Exe, wait_ready => false}}),
        Exit = cnb_cluster:wait_cnode_exit(C, Port, 300000),
        COut = [binary_to_list(L) || L <- cnb_cluster:cnode_output(C, Port)],
        Exit =:= {ok, 0} orelse erlang:error({bench_dist_failed, Exit, COut}),
        Setup = cnb_cluster:call(B, dist_beam, connect_setup_us, [NA, ?CONNECTS], 120000),
        {Rate, Cpu} = cnb_cluster:call(B, dist_beam, send, [NA, ?MESSAGES], 300000),
        COut ++ [io_lib:format("dist_beam.connect_setup_us ~p us", [Setup]),
                 io_lib:format("dist_beam.to_beam_msgs_per_s ~p msg/s", [round(Rate)]),
                 io_lib:format("dist_beam.sender_cpu_ns_per_msg ~p ns", [round(Cpu)])]
    after
        cnb_cluster:stop(C)
    end.

%% TLS distribution (-proto_dist inet_tls and the C node's --tls-*): set-up
%% time and one-way throughput of bench_dist against a hidden Erlang node, and
%% the call round trip to a C worker against an Erlang process, all over TLS.
tls(Root) ->
    Certs = cnb_tls_certs:make(),
    C = cnb_cluster:new(),
    try
        Ebin = filename:join([Root, "build", "bench", "ebin"]),
        TArgs = cnb_tls_certs:erl_args(Certs, node, #{}),
        {ok, A, NA} = cnb_cluster:start_node(C, #{name => "tsink", args => ["-pa", Ebin | TArgs]}),
        {ok, B, _} = cnb_cluster:start_node(C, #{name => "tsender",
                                                 args => ["-pa", Ebin, "-hidden" | TArgs]}),
        ok = cnb_cluster:call(A, dist_beam, start_sink, []),
        {Cert, Key} = maps:get(node, Certs),
        Env = [{"CNB_BENCH_TLS_CERT", Cert}, {"CNB_BENCH_TLS_KEY", Key},
               {"CNB_BENCH_TLS_CACERT", maps:get(ca, Certs)}],
        Exe = filename:join([Root, "build", "bench", "bench_dist"]),
        {ok, Port, _} = cnb_cluster:start_cnode(
                          C, {[cnb_cluster:unique_name("benchtc"), cnb_cluster:cookie(C),
                               atom_to_list(NA), integer_to_list(?CONNECTS),
                               integer_to_list(?MESSAGES)],
                              #{exe => Exe, wait_ready => false, env => Env}}),
        Exit = cnb_cluster:wait_cnode_exit(C, Port, 300000),
        COut = [binary_to_list(L) || L <- cnb_cluster:cnode_output(C, Port)],
        Exit =:= {ok, 0} orelse erlang:error({bench_dist_tls_failed, Exit, COut}),
        Setup = cnb_cluster:call(B, dist_beam, connect_setup_us, [NA, ?CONNECTS], 120000),
        {Rate, Cpu} = cnb_cluster:call(B, dist_beam, send, [NA, ?MESSAGES], 300000),
        {ok, _, CN} = cnb_cluster:start_cnode(
                        C, ["--cookie", cnb_cluster:cookie(C), "--sname",
                            cnb_cluster:unique_name("benchtr"), "--demo", "--log-level", "warning"
                            | cnb_tls_certs:cnode_args(Certs, node)]),
        Srv = cnb_cluster:call(A, runtime_bench, beam_count_server, []),
        N = 20000,
        CRtt = cnb_cluster:call(B, runtime_bench, call_rtt_us, [{echo, CN}, N], 300000),
        BRtt = cnb_cluster:call(B, runtime_bench, call_rtt_us, [Srv, N], 300000),
        [L || L <- COut, lists:prefix("tls.", L)] ++
            [io_lib:format("tls_beam.connect_setup_us ~p us", [Setup]),
             io_lib:format("tls_beam.to_beam_msgs_per_s ~p msg/s", [round(Rate)]),
             io_lib:format("tls_beam.sender_cpu_ns_per_msg ~p ns", [round(Cpu)]),
             io_lib:format("tls.call_rtt_us ~.2f us", [CRtt]),
             io_lib:format("tls_beam.call_rtt_us ~.2f us", [BRtt])]
    after
        cnb_cluster:stop(C),
        cnb_tls_certs:remove(Certs)
    end.

%% Process-runtime figures: calls, one-way messages and idle memory, for a C
%% worker and for an Erlang process on another node, all driven from node B.
runtime(Root) ->
    C = cnb_cluster:new(),
    try
        Ebin = filename:join([Root, "build", "bench", "ebin"]),
        {ok, A, _} = cnb_cluster:start_node(C, #{name => "srv", args => ["-pa", Ebin]}),
        {ok, B, _} = cnb_cluster:start_node(C, #{name => "cli", args => ["-pa", Ebin]}),
        {ok, Port, CN} = cnb_cluster:start_cnode(
                           C, ["--cookie", cnb_cluster:cookie(C), "--sname",
                               cnb_cluster:unique_name("benchrt"), "--demo",
                               "--log-level", "warning"]),
        Srv = cnb_cluster:call(A, runtime_bench, beam_count_server, []),
        {ok, Probe} = cnb_cluster:call(B, gen_server, call, [{probe, CN}, spawn]),
        N = 20000,
        CRtt = cnb_cluster:call(B, runtime_bench, call_rtt_us, [{echo, CN}, N], 300000),
        BRtt = cnb_cluster:call(B, runtime_bench, call_rtt_us, [Srv, N], 300000),
        M = 200000,
        CMsgs = cnb_cluster:call(B, runtime_bench, to_worker_msgs_per_s, [Probe, M], 300000),
        BMsgs = cnb_cluster:call(B, runtime_bench, to_worker_msgs_per_s, [Srv, M], 300000),
        Idle = 10000,
        OsPid = cnb_cluster:cnode_os_pid(C, Port),
        R0 = bench_targets:rss_bytes(OsPid),
        ok = cnb_cluster:call(B, runtime_bench, start_idle_c, [CN, Idle], 300000),
        R1 = bench_targets:rss_bytes(OsPid),
        BIdle = cnb_cluster:call(A, runtime_bench, idle_beam_bytes, [Idle], 300000),
        [io_lib:format("runtime.call_rtt_us ~.2f us", [CRtt]),
         io_lib:format("runtime_beam.call_rtt_us ~.2f us", [BRtt]),
         io_lib:format("runtime.to_worker_msgs_per_s ~b msg/s", [round(CMsgs)]),
         io_lib:format("runtime_beam.to_worker_msgs_per_s ~b msg/s", [round(BMsgs)]),
         io_lib:format("runtime.idle_worker_bytes ~b bytes", [round((R1 - R0) / Idle)]),
         io_lib:format("runtime_beam.idle_worker_bytes ~b bytes", [round(BIdle)])]
    after
        cnb_cluster:stop(C)
    end.

%% :global figures on a visible cluster a, b plus the C node connected to a.
global(Root) ->
    C = cnb_cluster:new(),
    try
        {A, NA, B} = bench_targets:global_cluster(C, Root, {"ga", "gb"}),
        {Port, CN} = bench_targets:demo_cnode(C, {A, NA}, "benchg"),
        %% Gone after the owner exits: C worker vs Erlang process (on a).
        {ok, W} = cnb_cluster:call(B, gen_server, call, [{cache_sup, CN}, {start, gone, x}]),
        H = cnb_cluster:call(A, global_bench, holder, [{beam, gone}]),
        GoneC = gone_us(B, {cache, gone}, fun() -> cnb_cluster:call(A, erlang, exit, [W, kill]) end),
        GoneB = gone_us(B, {beam, gone}, fun() -> cnb_cluster:call(A, erlang, exit, [H, kill]) end),
        %% Gone after kill -9 of the owner's node: the C node vs an Erlang node.
        {ok, _} = cnb_cluster:call(B, gen_server, call, [{cache_sup, CN}, {start, k9, x}]),
        Ebin = filename:join([Root, "build", "bench", "ebin"]),
        {ok, D, _} = cnb_cluster:start_node(C, #{name => "gd",
                                                 args => ["-pa", Ebin, "-connect_all", "true"]}),
        pong = cnb_cluster:call(D, net_adm, ping, [NA]),
        ok = cnb_cluster:call(D, global, sync, []),
        _ = cnb_cluster:call(D, global_bench, holder, [{beam, k9}]),
        OsC = cnb_cluster:cnode_os_pid(C, Port),
        OsD = cnb_cluster:call(D, os, getpid, []),
        K9C = gone_us(B, {cache, k9}, fun() -> os:cmd("kill -9 " ++ integer_to_list(OsC)) end),
        K9B = gone_us(B, {beam, k9}, fun() -> os:cmd("kill -9 " ++ OsD) end),
        %% Registration last, on a new C node: its 1,101 names would slow the
        %% DOWN handling measured above.
        {_, CN2} = bench_targets:demo_cnode(C, {A, NA}, "benchg"),
        Reg = lists:append(
                [begin
                     Tc = cnb_cluster:call(B, global_bench, register_c, [CN2, {c, N}, N], 300000),
                     Tb = cnb_cluster:call(B, global_bench, register_beam, [{b, N}, N], 300000),
                     [io_lib:format("global.register_~b_names_ms ~.2f ms", [N, Tc / 1000]),
                      io_lib:format("global_beam.register_~b_names_ms ~.2f ms", [N, Tb / 1000])]
                 end || N <- [1, 10, 100, 1000]]),
        Reg ++ [io_lib:format("global.gone_after_exit_us ~b us", [GoneC]),
                io_lib:format("global_beam.gone_after_exit_us ~b us", [GoneB]),
                io_lib:format("global.gone_after_kill9_us ~b us", [K9C]),
                io_lib:format("global_beam.gone_after_kill9_us ~b us", [K9B])]
    after
        cnb_cluster:stop(C)
    end.

gone_us(Peer, Name, Kill) ->
    T0 = os:system_time(microsecond),
    _ = Kill(),
    cnb_cluster:call(Peer, global_bench, wait_gone_us, [Name, T0], 60000).

%% Figures of several rounds -> {their medians (in the first round's order),
%% #{"<g>_rounds.<m>" => [{C, BEAM}] of each round} for each pair g.m, g_beam.m}.
merge_rounds([]) -> {[], #{}};
merge_rounds([First | _] = PerRound) ->
    Vals = fun(K) -> [V || R <- PerRound, {K2, V, _} <- R, K2 =:= K] end,
    Keys = lists:usort([K || R <- PerRound, {K, _, _} <- R]),
    Seen = [K || {K, _, _} <- First],
    Order = Seen ++ [K || K <- Keys, not lists:member(K, Seen)],
    Units = maps:from_list([{K, U} || R <- PerRound, {K, _, U} <- R]),
    Figs = [{K, bench_stats:median(Vals(K)), maps:get(K, Units)} || K <- Order],
    Pairs = [{G ++ "_rounds." ++ M, lists:zip(Cs, Bs)}
             || K <- Keys, [G, M] <- [string:split(K, ".")], not lists:suffix("_beam", G),
                Cs <- [Vals(K)], Bs <- [Vals(G ++ "_beam." ++ M)],
                Bs =/= [], length(Cs) =:= length(Bs)],
    {Figs, maps:from_list(Pairs)}.

%% "<group>_rounds.<metric> C1/B1 C2/B2 ...": every round's pair of a figure.
parse_rounds(L0) ->
    L = string:trim(lists:flatten(L0)),
    case string:lexemes(L, " ") of
        [K | Pairs] ->
            case string:split(K, ".") of
                [G, _] ->
                    case lists:suffix("_rounds", G) of
                        true -> [{K, [{num(C), num(B)} || P <- Pairs, [C, B] <- [string:split(P, "/")]]}];
                        false -> []
                    end;
                _ -> []
            end;
        _ -> []
    end.

parse(L0) ->
    L = string:trim(lists:flatten(L0)),
    case string:lexemes(L, " ") of
        [K, V | U] ->
            case {lists:member($., K), num(V)} of
                {true, N} when is_number(N) -> [{K, N, string:join(U, " ")}];
                _ -> []
            end;
        _ -> []
    end.

num(S) ->
    case string:to_float(S) of
        {F, ""} -> F;
        _ -> case string:to_integer(S) of
                 {I, ""} -> I;
                 _ -> error
             end
    end.

