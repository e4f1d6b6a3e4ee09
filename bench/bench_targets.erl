%% bench_targets: the figures issue 19's targets are stated in, each C figure
%% beside its BEAM equivalent, both sides run alternately over several rounds
%% (C, BEAM, BEAM, C, ...) and reported as medians (bench_stats). Run by
%% bench_run (section `targets`; `make bench-quick` runs it alone with the
%% quick parameters). On a private cluster: Erlang nodes srv and cli (visible,
%% one :global cluster), a `cnode --demo` connected to srv, callers on cli.
%%
%% Figure lines: target.<metric> (C) / target_beam.<metric> (BEAM), and
%% target_ets.* / target_ets_beam.* (the NIF vs ETS); target_rounds.* lines
%% hold every round's pair. With plots (full runs) also the series of the
%% plots: plot_*.<metric> lines (see bench_plots).
-module(bench_targets).
-export([run/2, params/1, global_cluster/3, demo_cnode/3, rss_bytes/1]).

%% Rounds and sizes: quick (make bench-quick, under a minute) or full. The
%% call round trips take `call_rounds' rounds: a round costs under a second,
%% and their ratio moves most from round to round.
-spec params(quick | full) -> map().
params(quick) ->
    #{rounds => 3, call_rounds => 3, callers => [{1, 300}, {8, 60}, {64, 8}], msgs => 20000,
      pipelined => 10000, to_beam => 20000, starts => 10, idle => 1000, lookups => 100000,
      sizes => [1000, 100000], plots => false}; % 1M keys: filling takes too long here
params(full) ->
    #{rounds => 5, call_rounds => 11, callers => [{1, 3000}, {8, 600}, {64, 80}], msgs => 100000,
      pipelined => 50000, to_beam => 100000, starts => 50, idle => 10000, lookups => 1000000,
      sizes => [1000, 10000, 100000, 1000000], plots => true,
      plot_callers => [{2, 1500}, {4, 800}, {16, 300}, {32, 150}],
      plot_bytes => [16, 256, 4096, 65536]}.

-define(WINDOW, 64).
-define(GONE_PER_ROUND, 7).

-spec run(file:filename(), map()) -> [string()].
run(Root, P) ->
    C = cnb_cluster:new(),
    try
        {A, NA, B} = global_cluster(C, Root, {"srv", "cli"}),
        {Port, CN} = demo_cnode(C, {A, NA}, "benchtg"),
        Srv = cnb_cluster:call(A, runtime_bench, beam_count_server, []),
        ok = cnb_cluster:call(A, dist_beam, start_sink, []),
        ok = cnb_cluster:call(A, global_bench, start_beam_cache_sup, []),
        Env = #{ctx => C, a => A, b => B, na => NA, cn => CN, srv => Srv, root => Root},
        note("cluster up"),
        Groups = [{calls, fun() -> calls(Env, P) end},
                  {messages, fun() -> messages(Env, P) end},
                  {to_beam, fun() -> to_beam(Env, P) end},
                  {global, fun() -> global(Env, P) end},
                  {lookups, fun() -> lookups(Root, P) end},
                  {plots, fun() -> plots(Env, P) end},
                  {idle, fun() -> idle(Env#{port => Port}, P) end}],
        lists:append([F() || {G, F} <- Groups, wanted(G)])
    after
        cnb_cluster:stop(C)
    end.

%% BENCH_TARGETS=calls,messages runs only those groups of the targets
%% section (to look at one figure; the report then lacks the others).
wanted(Group) ->
    case os:getenv("BENCH_TARGETS") of
        false -> true;
        "" -> true;
        Gs -> lists:member(atom_to_list(Group), string:lexemes(Gs, ","))
    end.

%% Two visible Erlang nodes (names {NameA, NameB}) in one :global cluster,
%% with build/bench/ebin in their paths: {PeerA, NodeA, PeerB}.
-spec global_cluster(pid(), file:filename(), {string(), string()}) -> {pid(), node(), pid()}.
global_cluster(C, Root, {NameA, NameB}) ->
    Ebin = filename:join([Root, "build", "bench", "ebin"]),
    Args = ["-pa", Ebin, "-connect_all", "true"],
    {ok, A, NA} = cnb_cluster:start_node(C, #{name => NameA, args => Args}),
    {ok, B, NB} = cnb_cluster:start_node(C, #{name => NameB, args => Args}),
    pong = cnb_cluster:call(A, net_adm, ping, [NB]),
    ok = cnb_cluster:call(A, global, sync, []),
    {A, NA, B}.

%% A `cnode --demo` connected to node NA (peer A): {Port, CNode} once A sees it.
-spec demo_cnode(pid(), {pid(), node()}, string()) -> {port(), node()}.
demo_cnode(C, {A, NA}, Prefix) ->
    {ok, Port, CN} = cnb_cluster:start_cnode(
                       C, ["--cookie", cnb_cluster:cookie(C), "--sname",
                           cnb_cluster:unique_name(Prefix), "--demo", "--log-level",
                           "warning", "--connect", atom_to_list(NA)]),
    true = cnb_cluster:wait_until(
             fun() -> lists:member(CN, cnb_cluster:call(A, erlang, nodes, [hidden])) end, 5000),
    {Port, CN}.

alt(P, Cf, Bf) -> bench_stats:alternate(maps:get(rounds, P), Cf, Bf).

lines(Group, Alt, Units) -> bench_stats:figure_lines(Group, Alt, Units, "").

note(What) ->
    {_, Ms} = statistics(wall_clock),
    io:format(standard_error, "bench: targets: ~s (the step before took ~.1f s)~n", [What, Ms / 1000]).

%% Call round trip p50 / p99 with 1, 8, 64 concurrent callers (on cli).
calls(#{b := B, cn := CN, srv := Srv}, P) ->
    lists:append([latency(B, CN, Srv, P, K, Calls) || {K, Calls} <- maps:get(callers, P)]).

latency(B, CN, Srv, P, K, Calls) ->
    note(io_lib:format("call round trip, ~b callers", [K])),
    F = fun(Dest) -> fun() -> cnb_cluster:call(B, runtime_bench, call_latency_us,
                                                [Dest, K, Calls], 300000) end end,
    Alt = alt(P#{rounds := maps:get(call_rounds, P)}, F({echo, CN}), F(Srv)),
    Sfx = "_us_" ++ integer_to_list(K) ++ "c",
    lines("target", #{list_to_atom("call_p50" ++ Sfx) => maps:get(p50, Alt),
                      list_to_atom("call_p99" ++ Sfx) => maps:get(p99, Alt)},
          #{list_to_atom("call_p50" ++ Sfx) => "us", list_to_atom("call_p99" ++ Sfx) => "us"}).

%% Messages/s into one worker (a C probe vs an Erlang process on srv), and
%% pipelined request/response (64 outstanding calls) to echo vs the same.
messages(#{b := B, cn := CN, srv := Srv}, P) ->
    note("messages into one worker, pipelined calls"),
    {ok, Probe} = cnb_cluster:call(B, gen_server, call, [{probe, CN}, spawn]),
    M = maps:get(msgs, P),
    N = maps:get(pipelined, P),
    F = fun(Worker, Echo) ->
                fun() ->
                        #{to_worker_msgs_per_s =>
                              cnb_cluster:call(B, runtime_bench, to_worker_msgs_per_s,
                                               [Worker, M], 300000),
                          pipelined_calls_per_s =>
                              cnb_cluster:call(B, runtime_bench, pipelined_calls_per_s,
                                               [Echo, N, ?WINDOW], 300000)}
                end
        end,
    lines("target", alt(P, F(Probe, {echo, CN}), F(Srv, Srv)),
          #{to_worker_msgs_per_s => "msg/s", pipelined_calls_per_s => "calls/s"}).

%% Small messages one way to one BEAM process (bench_sink on srv): from a C
%% node (bench_dist) vs from an Erlang process on cli; sender CPU per message.
to_beam(Env, P) ->
    note("C -> BEAM messages"),
    M = maps:get(to_beam, P),
    lines("target", alt(P, fun() -> c_to_beam(Env, M, 0) end, fun() -> beam_to_beam(Env, M, 0) end),
          #{to_beam_msgs_per_s => "msg/s", sender_cpu_ns_per_msg => "ns"}).

c_to_beam(#{ctx := C, na := NA, root := Root}, M, Bytes) ->
    Exe = filename:join([Root, "build", "bench", "bench_dist"]),
    {ok, Port, _} = cnb_cluster:start_cnode(
                      C, {[cnb_cluster:unique_name("benchtd"), cnb_cluster:cookie(C),
                           atom_to_list(NA), "1", integer_to_list(M), integer_to_list(Bytes)],
                          #{exe => Exe, wait_ready => false}}),
    Exit = cnb_cluster:wait_cnode_exit(C, Port, 300000),
    Out = [binary_to_list(L) || L <- cnb_cluster:cnode_output(C, Port)],
    Exit =:= {ok, 0} orelse erlang:error({bench_dist_failed, Exit, Out}),
    maps:from_list([{list_to_atom(K), list_to_float(V ++ ".0")}
                    || L <- Out, ["dist." ++ K, V | _] <- [string:lexemes(L, " ")],
                       lists:member(K, ["to_beam_msgs_per_s", "sender_cpu_ns_per_msg"])]).

beam_to_beam(#{b := B, na := NA}, M, Bytes) ->
    {Rate, Cpu} = cnb_cluster:call(B, dist_beam, send, [NA, M, Bytes], 300000),
    #{to_beam_msgs_per_s => float(Rate), sender_cpu_ns_per_msg => float(Cpu)}.

%% Worker start + :global name (cache_sup on the C node vs beam_cache_sup on
%% srv, called from cli); the name gone on cli after the owner is killed.
global(#{a := A, b := B, cn := CN, na := NA} = Env, P) ->
    note(":global start and gone"),
    K = maps:get(starts, P),
    R = counter(),
    StartAs = fun(Key, Sup) -> fun() -> #{Key =>
                                              cnb_cluster:call(B, global_bench, start_global_us,
                                                               [Sup, {R(), make_ref()}, K], 300000)}
                                        end end,
    Start = fun(Sup) -> StartAs(start_global_us, Sup) end,
    %% One exit is one sample of a few hundred microseconds: each round takes
    %% the median of ?GONE_PER_ROUND of them.
    Gone1 = fun(Owner) ->
                    Name = {cache, {gone, R()}},
                    Pid = Owner(Name),
                    T0 = os:system_time(microsecond),
                    _ = cnb_cluster:call(A, erlang, exit, [Pid, kill]),
                    cnb_cluster:call(B, global_bench, wait_gone_us, [Name, T0], 60000)
            end,
    Gone = fun(Owner) ->
                   fun() -> #{gone_after_exit_us =>
                                  bench_stats:median([Gone1(Owner)
                                                      || _ <- lists:seq(1, ?GONE_PER_ROUND)])}
                   end
           end,
    COwner = fun({cache, Id}) ->
                     {ok, W} = cnb_cluster:call(B, gen_server, call, [{cache_sup, CN}, {start, Id, x}]),
                     W
             end,
    BOwner = fun(Name) -> cnb_cluster:call(A, global_bench, holder, [Name]) end,
    Hidden = lines("target", alt(P, Start({cache_sup, CN}), Start({beam_cache_sup, NA})),
                   #{start_global_us => "us"})
        ++ lines("target", alt(P, Gone(COwner), Gone(BOwner)), #{gone_after_exit_us => "us"}),
    Hidden ++ global_visible(Env, P, StartAs).

%% Issue 20: the same start with a visible C node, whose registrar takes the
%% name through global's own protocol (no anchor), and whereis from C (its
%% own copy of the name table) vs global:whereis_name on an Erlang node.
%% The visible node starts only now: in the cluster, it is one more node in
%% every registration's locks and register calls, the BEAM's too, and the
%% hidden figures above ran without it (it stays up for the groups after).
global_visible(#{ctx := C, a := A, b := B, na := NA, cn := CN}, P, StartAs) ->
    note(":global start, visible C node"),
    {CV, OsPid} = visible_cnode(C, {A, NA}, B),
    %% With each round, the C node's CPU time and context switches (all its
    %% threads) per start: registering its own worker (C) vs answering the
    %% Erlang registration's calls (BEAM): load-independent evidence.
    K = maps:get(starts, P),
    Cpu = fun(F) -> fun() ->
                            {T0, S0} = task_cpu(OsPid),
                            M = F(),
                            {T1, S1} = task_cpu(OsPid),
                            M#{cnode_cpu_us_per_start => (T1 - T0) / 1000 / K,
                               cnode_switches_per_start => (S1 - S0) / K}
                    end end,
    Vis = lines("target", alt(P, Cpu(StartAs(start_global_visible_us, {cache_sup, CV})),
                              Cpu(StartAs(start_global_visible_us, {beam_cache_sup, NA}))),
                #{start_global_visible_us => "us", cnode_cpu_us_per_start => "us",
                  cnode_switches_per_start => "switches"}),
    note("whereis from C"),
    N = maps:get(lookups, P),
    {ok, W} = cnb_cluster:call(B, gen_server, call, [{cache_sup, CV}, {start, whereis_bench, x}]),
    Name = {cache, whereis_bench},
    true = cnb_cluster:wait_until(
             fun() -> cnb_cluster:call(B, global, whereis_name, [Name]) =:= W end, 10000),
    Where = lines("target", alt(P, fun() -> #{whereis_ns => cnb_cluster:call(
                                                              B, global_bench, whereis_c_ns,
                                                              [CV, Name, N], 300000)} end,
                                fun() -> #{whereis_ns => cnb_cluster:call(
                                                           B, global_bench, whereis_beam_ns,
                                                           [Name, N], 300000)} end),
                  #{whereis_ns => "ns"}),
    %% The hidden node asks an Erlang node's rex: a round trip per lookup.
    Hid = cnb_cluster:call(B, global_bench, whereis_c_ns, [CN, Name, 200], 300000),
    Vis ++ Where ++ [io_lib:format("target_hidden.whereis_ns ~b ns", [round(Hid)])].

%% A `cnode --demo --visible` connected to node NA: its node name once every
%% Erlang node synced with it and it counts both as known (a call to its
%% global_name_server from each comes after that node's `resolved`).
visible_cnode(C, {A, NA}, B) ->
    {ok, Port, CV} = cnb_cluster:start_cnode(
                    C, ["--cookie", cnb_cluster:cookie(C), "--sname",
                        cnb_cluster:unique_name("benchtv"), "--demo", "--visible", "--log-level",
                        "warning", "--connect", atom_to_list(NA)]),
    true = cnb_cluster:wait_until(
             fun() -> lists:all(fun(X) -> lists:member(CV, cnb_cluster:call(X, erlang, nodes, []))
                                end, [A, B])
             end, 10000),
    [ok = cnb_cluster:call(X, global, sync, [], 60000) || X <- [A, B]],
    [true = cnb_cluster:call(X, gen_server, call,
                             [{global_name_server, CV}, {del_lock, {x, y}}, 10000]) || X <- [A, B]],
    {CV, cnb_cluster:cnode_os_pid(C, Port)}.

%% Run time (ns, /proc/PID/task/*/schedstat) and context switches of every
%% thread of OS process OsPid.
task_cpu(OsPid) ->
    Dir = "/proc/" ++ integer_to_list(OsPid) ++ "/task/",
    {ok, Tids} = file:list_dir(Dir),
    lists:foldl(
      fun(Tid, {T, S}) ->
              case {file:read_file(Dir ++ Tid ++ "/schedstat"), file:read_file(Dir ++ Tid ++ "/status")} of
                  {{ok, Sched}, {ok, St}} ->
                      [Run | _] = string:lexemes(binary_to_list(Sched), " \n"),
                      Sw = [list_to_integer(V) || {match, [V]} <-
                               [re:run(St, Re, [{capture, all_but_first, list}])
                                || Re <- ["\nvoluntary_ctxt_switches:\\s+(\\d+)",
                                          "nonvoluntary_ctxt_switches:\\s+(\\d+)"]]],
                      {T + list_to_integer(Run), S + lists:sum(Sw)};
                  _ -> {T, S} % a thread that ended meanwhile
              end
      end, {0, 0}, Tids).

counter() ->
    C = counters:new(1, []),
    fun() -> counters:add(C, 1, 1), counters:get(C, 1) end.

%% NIF lookups vs Registry.lookup/2 and :ets.lookup/2 (nif_beam:alternate/3,
%% in a VM of its own as the other NIF figures).
lookups(Root, P) ->
    note("NIF lookups"),
    Ebin = filename:join([Root, "build", "bench", "ebin"]),
    Cmd = io_lib:format("erl -noshell -pa ~s -eval 'nif_beam:alternate(~b, ~b, ~w), halt().'",
                        [Ebin, maps:get(rounds, P), maps:get(lookups, P), maps:get(sizes, P)]),
    Out = string:split(os:cmd(lists:flatten(Cmd)), "\n", all),
    [L || L <- Out, lists:prefix("target", L)].

%% Resident memory per idle C worker vs erlang:memory(processes) per idle
%% gen_server (not alternated: neither moves with load; one round).
idle(#{ctx := C, port := Port, a := A, b := B, cn := CN}, P) ->
    note("idle memory"),
    N = maps:get(idle, P),
    OsPid = cnb_cluster:cnode_os_pid(C, Port),
    R0 = rss_bytes(OsPid),
    ok = cnb_cluster:call(B, runtime_bench, start_idle_c, [CN, N], 300000),
    R1 = rss_bytes(OsPid),
    BIdle = cnb_cluster:call(A, runtime_bench, idle_beam_bytes, [N], 300000),
    [io_lib:format("target.idle_worker_bytes ~b bytes", [round((R1 - R0) / N)]),
     io_lib:format("target_beam.idle_worker_bytes ~b bytes", [round(BIdle)])].

-spec rss_bytes(integer()) -> integer().
rss_bytes(OsPid) ->
    {ok, Bin} = file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/status"),
    {match, [Kb]} = re:run(Bin, "VmRSS:\\s+(\\d+) kB", [{capture, all_but_first, list}]),
    list_to_integer(Kb) * 1024.

%% The extra series of the plots (full runs): round trips at more caller
%% counts, and messages/s by message size in three directions.
plots(Env, #{plots := true} = P) ->
    #{b := B, cn := CN, srv := Srv} = Env,
    Calls = lists:append([latency(B, CN, Srv, P, K, N) || {K, N} <- maps:get(plot_callers, P)]),
    {ok, Probe} = cnb_cluster:call(B, gen_server, call, [{probe, CN}, spawn]),
    Sizes = lists:append([by_size(Env#{probe => Probe}, P, S) || S <- maps:get(plot_bytes, P)]),
    Calls ++ Sizes;
plots(_, _) ->
    [].

by_size(#{b := B, probe := Probe, srv := Srv} = Env, P, Bytes) ->
    note(io_lib:format("messages of ~b bytes", [Bytes])),
    M = max(2000, min(maps:get(to_beam, P), 100000000 div Bytes)),
    Sfx = "_" ++ integer_to_list(Bytes) ++ "b",
    ToBeam = alt(P, fun() -> c_to_beam(Env, M, Bytes) end, fun() -> beam_to_beam(Env, M, Bytes) end),
    ToC = alt(P, fun() -> #{msgs_per_s => cnb_cluster:call(B, runtime_bench, to_worker_msgs_per_s,
                                                           [Probe, M, Bytes], 300000)} end,
              fun() -> #{msgs_per_s => cnb_cluster:call(B, runtime_bench, to_worker_msgs_per_s,
                                                        [Srv, M, Bytes], 300000)} end),
    bench_stats:figure_lines("plot_to_beam", maps:with([to_beam_msgs_per_s], ToBeam),
                             #{to_beam_msgs_per_s => "msg/s"}, Sfx)
        ++ bench_stats:figure_lines("plot_to_c", ToC, #{msgs_per_s => "msg/s"}, Sfx).
