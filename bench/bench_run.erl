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
    %% BENCH_ONLY=dist,global runs only those sections (for a quick look; the
    %% report then holds only their figures).
    Sections = [{c, fun c_benches/1}, {beam, fun beam_benches/1}, {dist, fun dist/1},
                {runtime, fun runtime/1}, {global, fun global/1}, {tls, fun tls/1}],
    Only = case os:getenv("BENCH_ONLY") of
               false -> [N || {N, _} <- Sections];
               S -> [list_to_atom(X) || X <- string:lexemes(S, ",")]
           end,
    Lines = lists:append([F(Root) || {N, F} <- Sections, lists:member(N, Only)]),
    Figures = lists:append([parse(L) || L <- Lines]),
    [io:format("~s ~s ~s~n", [K, fmt(V), U]) || {K, V, U} <- Figures],
    ok = write_report(Root, Figures),
    io:format("wrote docs/BENCHMARKS.md~n"),
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
        R0 = rss_bytes(OsPid),
        ok = cnb_cluster:call(B, runtime_bench, start_idle_c, [CN, Idle], 300000),
        R1 = rss_bytes(OsPid),
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
        Ebin = filename:join([Root, "build", "bench", "ebin"]),
        Args = ["-pa", Ebin, "-connect_all", "true"],
        {ok, A, NA} = cnb_cluster:start_node(C, #{name => "ga", args => Args}),
        {ok, B, NB} = cnb_cluster:start_node(C, #{name => "gb", args => Args}),
        pong = cnb_cluster:call(A, net_adm, ping, [NB]),
        ok = cnb_cluster:call(A, global, sync, []),
        {ok, Port, CN} = cnb_cluster:start_cnode(
                           C, ["--cookie", cnb_cluster:cookie(C), "--sname",
                               cnb_cluster:unique_name("benchg"), "--demo", "--log-level",
                               "warning", "--connect", atom_to_list(NA)]),
        true = cnb_cluster:wait_until(
                 fun() -> lists:member(CN, cnb_cluster:call(A, erlang, nodes, [hidden])) end, 5000),
        %% Gone after the owner exits: C worker vs Erlang process (on a).
        {ok, W} = cnb_cluster:call(B, gen_server, call, [{cache_sup, CN}, {start, gone, x}]),
        H = cnb_cluster:call(A, global_bench, holder, [{beam, gone}]),
        GoneC = gone_us(B, {cache, gone}, fun() -> cnb_cluster:call(A, erlang, exit, [W, kill]) end),
        GoneB = gone_us(B, {beam, gone}, fun() -> cnb_cluster:call(A, erlang, exit, [H, kill]) end),
        %% Gone after kill -9 of the owner's node: the C node vs an Erlang node.
        {ok, _} = cnb_cluster:call(B, gen_server, call, [{cache_sup, CN}, {start, k9, x}]),
        {ok, D, _} = cnb_cluster:start_node(C, #{name => "gd", args => Args}),
        pong = cnb_cluster:call(D, net_adm, ping, [NA]),
        ok = cnb_cluster:call(D, global, sync, []),
        _ = cnb_cluster:call(D, global_bench, holder, [{beam, k9}]),
        OsC = cnb_cluster:cnode_os_pid(C, Port),
        OsD = cnb_cluster:call(D, os, getpid, []),
        K9C = gone_us(B, {cache, k9}, fun() -> os:cmd("kill -9 " ++ integer_to_list(OsC)) end),
        K9B = gone_us(B, {beam, k9}, fun() -> os:cmd("kill -9 " ++ OsD) end),
        %% Registration last, on a new C node: its 1,101 names would slow the
        %% DOWN handling measured above.
        {ok, _, CN2} = cnb_cluster:start_cnode(
                         C, ["--cookie", cnb_cluster:cookie(C), "--sname",
                             cnb_cluster:unique_name("benchg"), "--demo", "--log-level",
                             "warning", "--connect", atom_to_list(NA)]),
        true = cnb_cluster:wait_until(
                 fun() -> lists:member(CN2, cnb_cluster:call(A, erlang, nodes, [hidden])) end, 5000),
        Reg = lists:append(
                [begin
                     Tc = cnb_cluster:call(B, global_bench, register_c, [CN2, {c, N}, N], 300000),
                     Tb = cnb_cluster:call(B, global_bench, register_beam, [{b, N}, N], 300000),
                     [io_lib:format("global.register_~b_names_ms ~.2f ms", [N, Tc / 1000]),
                      io_lib:format("global_beam.register_~b_names_ms ~.2f ms", [N, Tb / 1000])]
                 end || N <- [1, 100, 1000]]),
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

rss_bytes(OsPid) ->
    {ok, B} = file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/status"),
    {match, [Kb]} = re:run(B, "VmRSS:\\s+(\\d+) kB", [{capture, all_but_first, list}]),
    list_to_integer(Kb) * 1024.

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

fmt(V) when is_integer(V) -> integer_to_list(V);
fmt(V) when V >= 100 -> integer_to_list(round(V));
fmt(V) -> float_to_list(V, [{decimals, 2}]).

higher_is_better(Unit) -> lists:suffix("/s", Unit).

write_report(Root, Figures) ->
    Map = maps:from_list([{K, {V, U}} || {K, V, U} <- Figures]),
    Pairs = lists:sort(
              [{K, V, U, BV}
               || {K, V, U} <- Figures,
                  [G, M] <- [string:split(K, ".")],
                  not lists:suffix("_beam", G),
                  {BV, _} <- [maps:get(G ++ "_beam." ++ M, Map, {undefined, x})],
                  BV =/= undefined]),
    Rows = [io_lib:format("| `~s` | ~s ~s | ~s ~s | ~s |~n",
                          [K, fmt(V), U, fmt(BV), U, ratio(V, BV, U)])
            || {K, V, U, BV} <- Pairs],
    All = [io_lib:format("| `~s` | ~s | ~s |~n", [K, fmt(V), U]) || {K, V, U} <- Figures],
    {{Y, Mo, D}, {H, Mi, _}} = calendar:universal_time(),
    Text = [<<"# Benchmarks\n\n">>,
            <<"Written by `make bench` (bench/bench_run.erl); do not edit by hand. Each C figure\n"
              "stands beside the BEAM's own equivalent measured in the same run on the same\n"
              "machine. *Ours vs BEAM* is how many times better ours is (above 1: ours wins;\n"
              "for times and bytes lower is better, for rates higher is better).\n\n">>,
            io_lib:format("Run: ~4..0b-~2..0b-~2..0b ~2..0b:~2..0b UTC, OTP ~s, ~b cores (~s).~n~n",
                          [Y, Mo, D, H, Mi, erlang:system_info(otp_release),
                           erlang:system_info(logical_processors_available), os_name()]),
            <<"## Side by side\n\n| metric | ours (C) | BEAM | ours vs BEAM |\n|---|---|---|---|\n">>,
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
              "  bench/bench_nif_term.c); see Term reader cost (issue 14) below.\n">>],
    Path = filename:join([Root, "docs", "BENCHMARKS.md"]),
    file:write_file(Path, [Text, kept_sections(Path)]).

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
              [<<"Side by side\n">>, <<"All figures\n">>, <<"What each pair measures\n">>]).

ratio(_, 0, _) -> "n/a";
ratio(0, _, _) -> "n/a";
ratio(V, BV, U) ->
    R = case higher_is_better(U) of
            true -> V / BV;
            false -> BV / V
        end,
    float_to_list(R, [{decimals, 2}]) ++ "x".

os_name() ->
    case file:read_file("/etc/os-release") of
        {ok, B} ->
            case re:run(B, "PRETTY_NAME=\"([^\"]+)\"", [{capture, all_but_first, list}]) of
                {match, [N]} -> N;
                _ -> "linux"
            end;
        _ -> "unknown"
    end.
