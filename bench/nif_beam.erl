%% nif_beam.erl: figures of the cnode_registry NIF beside the BEAM's own
%% registries, in one run (`make bench` runs run/0): lookups per second and
%% register+unregister pairs per second at 1k, 100k and 1M keys, from one
%% process and from two at once (one per scheduler); and lookups of lists of 64
%% keys (cnode_registry:lookup_many/2 vs one Registry.lookup per key).
%%   nif.<metric>         :cnode_registry (standalone registry, unique keys)
%%   nif_beam.<metric>    Elixir's Registry (unique keys, one partition): the pair
%%                        make bench compares
%%   nif_ets.<metric>     a public ETS set {Key, {Pid, Value}} (read_concurrency)
%%   nif_global.<metric>  :global.whereis_name (1k names only: registering global
%%                        names costs time linear in the names already there, so
%%                        100k of them take a quarter of an hour)
%% Keys are {cache, I}, values 42, lookups in a fixed random order. Needs
%% erlang_side/ebin (found from CNB_ROOT or this module's place) and Elixir's
%% ebin (from `elixir`'s install, /usr/lib/elixir by default; no nif_beam figures
%% without it).
-module(nif_beam).
-export([run/0, alternate/3]).

-define(LOOKUPS, 1000000).
-define(PAIRS, 200000).

-spec run() -> ok.
run() ->
    add_paths(),
    {ok, _} = application:ensure_all_started(elixir_app()),
    Sizes = [{1000, "1k"}, {100000, "100k"}, {1000000, "1m"}],
    lists:foreach(fun size_run/1, Sizes),
    ok.

%% For the targets of `make bench`: at each size (keys), the NIF, Registry and
%% an ETS set filled alike, then Rounds rounds of Lookups lookups each (one
%% process; NIF, Registry, ETS, NIF, Registry, ETS, ...). Prints the medians
%% as target.nif_lookups_per_s_<size> (NIF) beside target_beam.* (Registry)
%% and target_ets.* (NIF again) beside target_ets_beam.* (ETS).
-spec alternate(pos_integer(), pos_integer(), [pos_integer()]) -> ok.
alternate(Rounds, Lookups, Sizes) ->
    add_paths(),
    {ok, _} = application:ensure_all_started(elixir),
    lists:foreach(fun(N) -> alternate_size(Rounds, Lookups, N) end, Sizes).

alternate_size(Rounds, Lookups, N) ->
    Keys = keys(N),
    Owners = owners(),
    Nif = list_to_atom("nif_alt_" ++ integer_to_list(N)),
    {ok, NifSrv} = cnode_registry:start_link(#{name => Nif, keys => unique}),
    fill(Owners, N, fun(I) -> {ok, _} = cnode_registry:register(Nif, {cache, I}, 42) end),
    Reg = list_to_atom("reg_alt_" ++ integer_to_list(N)),
    {ok, RegSup} = 'Elixir.Registry':start_link([{keys, unique}, {name, Reg}]),
    fill(Owners, N, fun(I) -> {ok, _} = 'Elixir.Registry':register(Reg, {cache, I}, 42) end),
    T = ets:new(nif_alt, [set, public, {read_concurrency, true}]),
    Self = self(),
    [ets:insert(T, {{cache, I}, {Self, 42}}) || I <- lists:seq(0, N - 1)],
    Fs = [fun(K) -> cnode_registry:lookup(Nif, K) end,
          fun(K) -> 'Elixir.Registry':lookup(Reg, K) end,
          fun(K) -> ets:lookup(T, K) end],
    Rate = fun(F) -> Lookups * parallel(1, fun(Off) -> loop(F, Keys, N, Off, Off + Lookups, 0) end) end,
    [_ = loop(F, Keys, N, 0, min(N, 100000), 0) || F <- Fs],
    Rs = [[Rate(F) || F <- Fs] || _ <- lists:seq(1, Rounds)],
    Nifs = [A || [A, _, _] <- Rs],
    Alt = fun(Col) -> #{nif_lookups_per_s => {Nifs, [lists:nth(Col, R) || R <- Rs]}} end,
    Units = #{nif_lookups_per_s => "ops/s"},
    Suffix = "_" ++ size_label(N),
    [io:format("~s~n", [L]) || L <- bench_stats:figure_lines("target", Alt(2), Units, Suffix)
                                    ++ bench_stats:figure_lines("target_ets", Alt(3), Units, Suffix)],
    ets:delete(T),
    stop(RegSup),
    stop(NifSrv),
    [exit(O, kill) || O <- Owners],
    ok.

size_label(N) when N >= 1000000, N rem 1000000 =:= 0 -> integer_to_list(N div 1000000) ++ "m";
size_label(N) when N >= 1000, N rem 1000 =:= 0 -> integer_to_list(N div 1000) ++ "k";
size_label(N) -> integer_to_list(N).

elixir_app() ->
    case code:which('Elixir.Registry') of
        non_existing -> kernel;
        _ -> elixir
    end.

add_paths() ->
    Root = case os:getenv("CNB_ROOT") of
               false -> filename:dirname(filename:dirname(filename:dirname(
                                                            code:which(?MODULE))));
               R -> R
           end,
    true = code:add_patha(filename:join(Root, "erlang_side/ebin")),
    case code:which('Elixir.Registry') of
        non_existing ->
            Dirs = filelib:wildcard("/usr/lib/elixir/lib/elixir/ebin") ++
                filelib:wildcard("/usr/local/lib/elixir/lib/elixir/ebin"),
            [code:add_pathz(D) || D <- Dirs],
            ok;
        _ -> ok
    end.

size_run({N, Label}) ->
    Keys = keys(N),
    Owners = owners(),
    %% cnode_registry
    Nif = list_to_atom("nif_bench_" ++ Label),
    {ok, NifSrv} = cnode_registry:start_link(#{name => Nif, keys => unique}),
    fill(Owners, N, fun(I) -> {ok, _} = cnode_registry:register(Nif, {cache, I}, 42) end),
    measure("nif", Label, Keys, fun(K) -> cnode_registry:lookup(Nif, K) end),
    Batches = registry_beam:batches(tuple_to_list(Keys)), % lists of 64 keys
    measure_batched("nif", Label, Batches, fun(B) -> cnode_registry:lookup_many(Nif, B) end),
    pairs("nif", Label, fun(K) -> cnode_registry:register(Nif, K, 42),
                                  cnode_registry:unregister(Nif, K) end),
    stop(NifSrv),
    %% Elixir's Registry
    case code:which('Elixir.Registry') of
        non_existing -> ok;
        _ ->
            Reg = list_to_atom("reg_bench_" ++ Label),
            {ok, RegSup} = 'Elixir.Registry':start_link([{keys, unique}, {name, Reg}]),
            %% New owners: registering linked the first ones to the NIF
            %% registry's partition, and its stop took them with it.
            fill(owners(), N, fun(I) -> {ok, _} = 'Elixir.Registry':register(Reg, {cache, I}, 42) end),
            measure("nif_beam", Label, Keys, fun(K) -> 'Elixir.Registry':lookup(Reg, K) end),
            measure_batched("nif_beam", Label, Batches,
                            fun(B) -> ['Elixir.Registry':lookup(Reg, K) || K <- B] end),
            pairs("nif_beam", Label, fun(K) -> 'Elixir.Registry':register(Reg, K, 42),
                                               'Elixir.Registry':unregister(Reg, K) end),
            stop(RegSup)
    end,
    %% ETS
    T = ets:new(nif_bench, [set, public, {read_concurrency, true}]),
    Self = self(),
    [ets:insert(T, {{cache, I}, {Self, 42}}) || I <- lists:seq(0, N - 1)],
    measure("nif_ets", Label, Keys, fun(K) -> ets:lookup(T, K) end),
    pairs("nif_ets", Label, fun(K) -> ets:insert(T, {K, {Self, 42}}), ets:delete(T, K) end),
    ets:delete(T),
    %% :global: one process per name (a pid takes one global name), registered
    %% from one process (concurrent registrars contend for global's lock).
    case N =< 1000 of
        true ->
            Holders = [begin
                           H = spawn(fun() -> erlang:hibernate(erlang, exit, [normal]) end),
                           yes = global:register_name({cache, I}, H),
                           H
                       end || I <- lists:seq(0, N - 1)],
            measure_global(Label, Keys),
            [exit(H, kill) || H <- Holders],
            wait_global_empty();
        false -> ok
    end,
    [exit(O, kill) || O <- Owners],
    ok.

wait_global_empty() ->
    case global:registered_names() of
        [] -> ok;
        _ -> timer:sleep(10), wait_global_empty()
    end.

%% Four processes that own the entries (they stay alive while measured).
owners() ->
    [spawn(fun() -> owner_loop() end) || _ <- lists:seq(1, 4)].

owner_loop() ->
    receive
        {run, F, From} -> F(), From ! {self(), done}, owner_loop()
    end.

fill(Owners, N, Reg) ->
    Self = self(),
    W = length(Owners),
    Mons = [{O, monitor(process, O)} || O <- Owners],
    [O ! {run, fun() -> lists:foreach(Reg, lists:seq(J, N - 1, W)) end, Self}
     || {O, J} <- lists:zip(Owners, lists:seq(0, W - 1))],
    %% An owner that dies (a failed register) fails the run, not hangs it.
    [receive
         {O, done} -> demonitor(M, [flush]);
         {'DOWN', M, process, O, Why} -> erlang:error({fill_owner_died, Why})
     end || {O, M} <- Mons],
    ok.

keys(N) ->
    rand:seed(exsss, {7, 8, 9}),
    Order = [X || {_, X} <- lists:sort([{rand:uniform(), I} || I <- lists:seq(0, N - 1)])],
    list_to_tuple([{cache, I} || I <- Order]).

%% Lookups per second with one process, then two at once.
measure(Group, Label, Keys, Lookup) ->
    _ = loop(Lookup, Keys, tuple_size(Keys), 0, min(tuple_size(Keys), 100000), 0),
    lists:foreach(
      fun(P) ->
              Rate = parallel(P, fun(Off) ->
                                         Found = loop(Lookup, Keys, tuple_size(Keys), Off,
                                                      Off + ?LOOKUPS, 0),
                                         Found =:= ?LOOKUPS orelse
                                             io:format(standard_error, "~s: found ~p of ~p~n",
                                                       [Group, Found, ?LOOKUPS])
                                 end),
              out(Group, "lookups_per_s_" ++ Label ++ "_" ++ integer_to_list(P) ++ "p",
                  Rate * ?LOOKUPS, "ops/s")
      end, [1, 2]).

%% Lookups per second, one list of Batches per call of Lookup (one process).
measure_batched(Group, Label, Batches, Lookup) ->
    N = tuple_size(Batches),
    Size = length(element(1, Batches)),
    Rounds = ?LOOKUPS div Size,
    Rate = parallel(1, fun(Off) ->
                               Found = batch_loop(Lookup, Batches, N, Off, Off + Rounds, 0),
                               Found =:= Rounds * Size orelse
                                   io:format(standard_error, "~s: found ~p of ~p~n",
                                             [Group, Found, Rounds * Size])
                       end),
    out(Group, "batched_lookups_per_s_" ++ Label ++ "_1p", Rate * Rounds * Size, "ops/s").

batch_loop(_F, _Batches, _N, M, M, Found) -> Found;
batch_loop(F, Batches, N, I, M, Found) ->
    Lists = F(element(I rem N + 1, Batches)),
    batch_loop(F, Batches, N, I + 1, M, Found + length(lists:append(Lists))).

measure_global(Label, Keys) ->
    Size = tuple_size(Keys),
    Whereis = fun(K) -> case global:whereis_name(K) of
                            undefined -> [];
                            P -> [P]
                        end
              end,
    lists:foreach(
      fun(P) ->
              Rate = parallel(P, fun(Off) -> loop(Whereis, Keys, Size, Off, Off + ?LOOKUPS, 0) end),
              out("nif_global", "lookups_per_s_" ++ Label ++ "_" ++ integer_to_list(P) ++ "p",
                  Rate * ?LOOKUPS, "ops/s")
      end, [1, 2]).

%% register + unregister pairs per second (keys outside the filled range).
pairs(Group, Label, Pair) ->
    lists:foreach(
      fun(P) ->
              Rate = parallel(P, fun(Off) -> pair_loop(Pair, Off * 1000000, 0, ?PAIRS) end),
              out(Group, "register_unregister_per_s_" ++ Label ++ "_" ++ integer_to_list(P) ++ "p",
                  Rate * ?PAIRS, "pairs/s")
      end, [1, 2]).

pair_loop(_Pair, _Base, N, N) -> ok;
pair_loop(Pair, Base, I, N) ->
    Pair({cache, 16#40000000 + Base + I rem 50000}),
    pair_loop(Pair, Base, I + 1, N).

%% Runs F(Offset) in P processes at once; returns the number of runs per
%% second (so Rate * work per run = total throughput).
parallel(P, F) ->
    Self = self(),
    T0 = erlang:monotonic_time(),
    Pids = [spawn_link(fun() -> F(I * 7919), Self ! {self(), done} end) || I <- lists:seq(1, P)],
    [receive {Pid, done} -> ok end || Pid <- Pids],
    Secs = erlang:convert_time_unit(erlang:monotonic_time() - T0, native, microsecond) / 1.0e6,
    P / Secs.

loop(_F, _Keys, _Size, M, M, Found) -> Found;
loop(F, Keys, Size, I, M, Found) ->
    case F(element(I rem Size + 1, Keys)) of
        [_] -> loop(F, Keys, Size, I + 1, M, Found + 1);
        [] -> loop(F, Keys, Size, I + 1, M, Found)
    end.

stop(Pid) ->
    unlink(Pid),
    Ref = monitor(process, Pid),
    exit(Pid, shutdown),
    receive {'DOWN', Ref, _, _, _} -> ok end.

out(Group, Metric, Value, Unit) ->
    io:format("~s.~s ~.1f ~s~n", [Group, Metric, float(Value), Unit]).
