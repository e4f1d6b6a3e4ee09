%% bench_plots: the PNG plots of `make bench`, drawn by gnuplot from the run's
%% figures. Each plot's series are figures whose key matches a pattern with
%% the x value in it (1k, 100k, 1m; 64c; 4096b; register_100_names); the data
%% files and the gnuplot script go to build/bench/plots/, the PNGs to OutDir
%% (docs/ on a full run). A plot none of whose series has figures is left out;
%% no gnuplot: nothing drawn, and write/3 says so.
-module(bench_plots).
-export([write/3]).

%% {File, Title, XLabel, YLabel, [{SeriesTitle, KeyPattern}]}; both axes log.
plots() ->
    [{"bench_lookups.png", "Lookups/s vs registry size (one process)", "keys", "lookups/s",
      [{"C (core/registry, shared memory)", "^registry\\.lookups_per_s_([0-9]+[km]?)$"},
       {"NIF (:cnode_registry.lookup)", "^target\\.nif_lookups_per_s_([0-9]+[km]?)$"},
       {"Elixir Registry.lookup/2", "^target_beam\\.nif_lookups_per_s_([0-9]+[km]?)$"},
       {":ets.lookup/2", "^target_ets_beam\\.nif_lookups_per_s_([0-9]+[km]?)$"}]},
     {"bench_msg_size.png", "Messages/s vs message size (one way, one receiver)",
      "payload bytes", "messages/s",
      [{"C -> BEAM process", "^plot_to_beam\\.to_beam_msgs_per_s_([0-9]+)b$"},
       {"BEAM -> BEAM process", "^plot_to_beam_beam\\.to_beam_msgs_per_s_([0-9]+)b$"},
       {"BEAM -> C worker", "^plot_to_c\\.msgs_per_s_([0-9]+)b$"},
       {"BEAM -> BEAM (gen_server-like)", "^plot_to_c_beam\\.msgs_per_s_([0-9]+)b$"}]},
     {"bench_call_rtt.png", "gen_server:call round trip vs concurrent callers",
      "concurrent callers", "microseconds",
      [{"C worker p50", "^target\\.call_p50_us_([0-9]+)c$"},
       {"C worker p99", "^target\\.call_p99_us_([0-9]+)c$"},
       {"Erlang gen_server p50", "^target_beam\\.call_p50_us_([0-9]+)c$"},
       {"Erlang gen_server p99", "^target_beam\\.call_p99_us_([0-9]+)c$"}]},
     {"bench_global.png", ":global registration time vs number of names",
      "names registered one after another", "milliseconds (all names)",
      [{"C worker (C API)", "^global\\.register_([0-9]+)_names_ms$"},
       {"Erlang process", "^global_beam\\.register_([0-9]+)_names_ms$"}]}].

%% Figures: [{Key, Value, Unit}]. Returns the PNG paths written, or
%% {no_gnuplot, []} when gnuplot is not installed.
-spec write(file:filename(), [{string(), number(), string()}], file:filename()) ->
          {ok | no_gnuplot | gnuplot_failed, [file:filename()]}.
write(Root, Figures, OutDir) ->
    Dir = filename:join([Root, "build", "bench", "plots"]),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    ok = filelib:ensure_dir(filename:join(OutDir, "x")),
    Drawn = [P || P <- [plot(Dir, OutDir, Figures, Spec) || Spec <- plots()], P =/= none],
    Script = [S || {_, S} <- Drawn],
    ScriptPath = filename:join(Dir, "plots.gp"),
    ok = file:write_file(ScriptPath, Script),
    Pngs = [Png || {Png, _} <- Drawn],
    case os:find_executable("gnuplot") of
        false -> {no_gnuplot, []};
        _ when Pngs =:= [] -> {ok, []};
        Gp ->
            Out = os:cmd(Gp ++ " " ++ ScriptPath ++ " 2>&1; echo rc=$?"),
            case lists:suffix("rc=0\n", Out) of
                true -> {ok, Pngs};
                false -> io:format(standard_error, "bench: gnuplot: ~s", [Out]),
                         {gnuplot_failed, []}
            end
    end.

plot(Dir, OutDir, Figures, {File, Title, XL, YL, Series}) ->
    Data = [{T, points(Figures, Re)} || {T, Re} <- Series],
    case [D || {_, Ps} = D <- Data, Ps =/= []] of
        [] -> none;
        Have ->
            Base = filename:rootname(File),
            Plots = [begin
                         Dat = filename:join(Dir, Base ++ "_" ++ integer_to_list(I) ++ ".dat"),
                         ok = file:write_file(Dat, [io_lib:format("~w ~w~n", [X, Y]) || {X, Y} <- Ps]),
                         io_lib:format("'~s' using 1:2 with linespoints lw 2 pt 7 title '~s'",
                                       [Dat, T])
                     end || {I, {T, Ps}} <- lists:zip(lists:seq(1, length(Have)), Have)],
            Png = filename:join(OutDir, File),
            {Png, [io_lib:format("set terminal png size 800,500 font ',10' noenhanced~n"
                                 "set output '~s'~nset title \"~s\"~n"
                                 "set xlabel '~s'~nset ylabel '~s'~nset grid~n"
                                 "set key below~n"
                                 "set logscale xy~nset format y '%.0s%c'~n",
                                 [Png, Title, XL, YL]),
                   "plot ", lists:join(", ", Plots), "\nunset logscale\n"]}
    end.

points(Figures, Re) ->
    lists:sort([{x(X), V} || {K, V, _} <- Figures,
                             {match, [X]} <- [re:run(K, Re, [{capture, all_but_first, list}])]]).

x(S) ->
    case lists:last(S) of
        $k -> list_to_integer(lists:droplast(S)) * 1000;
        $m -> list_to_integer(lists:droplast(S)) * 1000000;
        _ -> list_to_integer(S)
    end.
