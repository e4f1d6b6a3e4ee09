%% @doc Soak (issue 12), `make soak MINUTES=N': three Erlang nodes churn against
%% the real cnode for N minutes -- C workers started and stopped, :global names
%% taken and released, calls (to workers, by global name, to echo), links,
%% shared-registry entries written and dropped -- while one Erlang node is
%% restarted every minute (in turn, the C node's anchor too). The C node's RSS
%% and open fds are sampled every 10 s. Passes with 0 lost replies, 0 stale
%% names, 0 stale registry entries, and RSS and fds flat (see flat/2).
%% Run by scripts/run-tests soak; results in docs/RELIABILITY.md.
-module(soak).

-export([run/1, main/1]).
%% On the nodes.
-export([start_churn/2, stop_churn/0, churn_init/3]).

-define(SAMPLE_MS, 10000).
-define(RESTART_MS, 60000).
-define(LIVE, 30).          % live workers per churning node
-define(PAUSE_MS, 20).      % between two churn steps

%% @doc Entry point for `erl -s'/-eval: runs for Minutes, halts 0 on success.
-spec main([string()] | integer()) -> no_return().
main([M]) -> main(list_to_integer(M));
main(Minutes) when is_integer(Minutes) ->
    R = try run(Minutes * 60000)
        catch C:E:St -> rel_checks:note("soak crashed: ~p:~p ~p", [C, E, St]), {error, crash}
        end,
    halt(case R of ok -> 0; _ -> 1 end).

%% @doc Runs the soak for Ms milliseconds; ok or {error, Failures}.
-spec run(pos_integer()) -> ok | {error, term()}.
run(Ms) ->
    Ctx = cnb_cluster:new(),
    try run(Ctx, Ms)
    after cnb_cluster:stop(Ctx)
    end.

%% The nodes load this suite from where this VM did.
node_args() ->
    ["-connect_all", "true", "-pa", filename:dirname(code:which(?MODULE))].

start_erl(Ctx, I, Others) ->
    {ok, P, N} = cnb_cluster:start_node(Ctx, #{name => "s" ++ integer_to_list(I), args => node_args()}),
    [pong = cnb_cluster:call(P, net_adm, ping, [O]) || O <- Others],
    ok = cnb_cluster:call(P, global, sync, [], 60000),
    {P, N}.

run(Ctx, Ms) ->
    N1 = start_erl(Ctx, 1, []),
    N2 = start_erl(Ctx, 2, [element(2, N1)]),
    N3 = start_erl(Ctx, 3, [element(2, N1), element(2, N2)]),
    {ok, Port, CN} = cnb_cluster:start_cnode(
                       Ctx, ["--cookie", cnb_cluster:cookie(Ctx), "--sname",
                             cnb_cluster:unique_name("soakc"), "--demo",
                             "--connect", atom_to_list(element(2, N1))]),
    OsPid = cnb_cluster:cnode_os_pid(Ctx, Port),
    Nodes0 = #{1 => N1, 2 => N2, 3 => N3},
    [start_churn_on(P, CN, {I, 0}) || {I, {P, _}} <- maps:to_list(Nodes0)],
    T0 = erlang:monotonic_time(millisecond),
    S0 = sample(OsPid),
    rel_checks:note("soak: C node ~s (os pid ~b) for ~b min; start RSS ~b kB, ~b fds",
                    [CN, OsPid, Ms div 60000, element(1, S0), element(2, S0)]),
    St = loop(#{ctx => Ctx, cn => CN, os_pid => OsPid, nodes => Nodes0, t0 => T0, ms => Ms,
                samples => [S0], next_restart => T0 + ?RESTART_MS, turn => 1, gen => 1,
                stats => #{}, restarts => 0, alive => true}),
    finish(St).

loop(St = #{t0 := T0, ms := Ms, os_pid := OsPid, samples := Ss}) ->
    Now = erlang:monotonic_time(millisecond),
    Alive = cnb_cluster:os_pid_alive(OsPid),
    case Now - T0 >= Ms orelse not Alive of
        true -> St#{alive := Alive};
        false ->
            timer:sleep(min(?SAMPLE_MS, max(0, T0 + Ms - Now))),
            St1 = St#{samples := [sample(OsPid) | Ss]},
            case erlang:monotonic_time(millisecond) >= maps:get(next_restart, St1) of
                true -> loop(restart_one(St1));
                false -> loop(St1)
            end
    end.

%% Restarts node Turn: its churn stops (its stats kept), the node stops, a new
%% one starts and joins, and churns.
restart_one(St = #{ctx := Ctx, cn := CN, nodes := Nodes, turn := I, gen := G, stats := Stats}) ->
    {P, _} = maps:get(I, Nodes),
    Stats1 = add(Stats, stop_churn_on(P)),
    ok = cnb_cluster:stop_node(Ctx, P),
    Others = [N || {J, {_, N}} <- maps:to_list(Nodes), J =/= I],
    {P2, N2} = start_erl(Ctx, I, Others),
    start_churn_on(P2, CN, {I, G}),
    St#{nodes := Nodes#{I := {P2, N2}}, turn := I rem 3 + 1, gen := G + 1, stats := Stats1,
        restarts := maps:get(restarts, St) + 1,
        next_restart := erlang:monotonic_time(millisecond) + ?RESTART_MS}.

finish(St = #{cn := CN, nodes := Nodes, os_pid := OsPid, samples := Ss0, stats := Stats0,
              restarts := Restarts, alive := Alive}) ->
    Peers = [P || {_, {P, _}} <- lists:sort(maps:to_list(Nodes))],
    Stats = lists:foldl(fun(P, A) -> add(A, stop_churn_on(P)) end, Stats0, Peers),
    Ss = lists:reverse(case Alive of true -> [sample(OsPid) | Ss0]; false -> Ss0 end),
    Agree = rel_checks:agree(Peers, 15000),
    View = case Agree of {ok, V} -> V; {disagree, [V | _]} -> V end,
    %% Every churn worker and name was released: none may be left.
    Left = [N || {N, _} <- View, is_soak_name(N)],
    Stale = rel_checks:stale_names(hd(Peers), View),
    StaleE = case Alive of
                 true -> rel_checks:stale_entries(hd(Peers), CN);
                 false -> not_checked
             end,
    {Rss, Fds} = lists:unzip(Ss),
    Warm = warm(Ss, St),
    rel_checks:note("soak: ~b min, ~b node restarts; ~p", [maps:get(ms, St) div 60000, Restarts,
                                                            maps:to_list(Stats)]),
    rel_checks:note("soak: C node RSS kB start ~b (after 1 min ~b), end ~b, max ~b; "
                    "fds start ~b (after 1 min ~b), end ~b, max ~b",
                    [hd(Rss), element(1, Warm), lists:last(Rss), lists:max(Rss),
                     hd(Fds), element(2, Warm), lists:last(Fds), lists:max(Fds)]),
    Every5 = [S || {K, S} <- lists:zip(lists:seq(0, length(Ss) - 1), Ss),
                   K rem (300000 div ?SAMPLE_MS) =:= 0],
    rel_checks:note("soak: C node {RSS kB, fds} every 5 min: ~w", [Every5]),
    Fails = [{c_node_died, OsPid} || not Alive] ++
        [{nodes_disagree, Agree} || element(1, Agree) =/= ok] ++
        [{lost_replies, maps:get(lost, Stats, 0)} || maps:get(lost, Stats, 0) =/= 0] ++
        [{wrong_replies, maps:get(wrong, Stats, 0)} || maps:get(wrong, Stats, 0) =/= 0] ++
        [{lost_exits, maps:get(lost_exit, Stats, 0)} || maps:get(lost_exit, Stats, 0) =/= 0] ++
        [{names_left, Left} || Left =/= []] ++
        [{stale_names, Stale} || Stale =/= []] ++
        [{stale_registry_entries, StaleE} || StaleE =/= [], StaleE =/= not_checked] ++
        flat(Warm, lists:last(Ss)),
    rel_checks:note("soak: lost replies ~b, wrong replies ~b, lost exit signals ~b, names left ~b, "
                    "stale names ~b, stale registry entries ~p; ~s",
                    [maps:get(lost, Stats, 0), maps:get(wrong, Stats, 0),
                     maps:get(lost_exit, Stats, 0), length(Left), length(Stale),
                     case StaleE of L when is_list(L) -> length(L); X -> X end,
                     case Fails of [] -> "PASS"; _ -> "FAIL" end]),
    [rel_checks:note("  FAIL ~P", [F, 30]) || F <- Fails],
    case Fails of [] -> ok; _ -> {error, Fails} end.

%% The sample one minute in (after warm-up), or the first one for a short run.
warm(Ss, _St) ->
    case length(Ss) > 60000 div ?SAMPLE_MS of
        true -> lists:nth(60000 div ?SAMPLE_MS + 1, Ss);
        false -> hd(Ss)
    end.

%% Flat: at the end at most 4 more fds than after warm-up, and RSS at most
%% 1.5 x its warm-up value + 8 MB (allocator slack; a leak of one worker or
%% one connection per churn step grows far past this in minutes).
flat({Rss0, Fd0}, {Rss1, Fd1}) ->
    [{fds_grew, Fd0, Fd1} || Fd1 > Fd0 + 4] ++
        [{rss_grew, Rss0, Rss1} || Rss1 > Rss0 * 3 div 2 + 8192].

is_soak_name({cache, {soak, _, _}}) -> true;
is_soak_name({soak_name, _, _}) -> true;
is_soak_name(_) -> false.

sample(OsPid) ->
    Dir = "/proc/" ++ integer_to_list(OsPid),
    Rss = case file:read_file(Dir ++ "/status") of
              {ok, B} ->
                  case re:run(B, "VmRSS:\\s+([0-9]+)", [{capture, all_but_first, list}]) of
                      {match, [K]} -> list_to_integer(K);
                      _ -> 0
                  end;
              _ -> 0
          end,
    Fds = case file:list_dir(Dir ++ "/fd") of {ok, L} -> length(L); _ -> 0 end,
    {Rss, Fds}.

add(A, B) -> maps:fold(fun(K, V, Acc) -> maps:update_with(K, fun(X) -> X + V end, V, Acc) end, A, B).

start_churn_on(P, CN, Tag) -> ok = cnb_cluster:call(P, ?MODULE, start_churn, [CN, Tag]).

stop_churn_on(P) ->
    case catch cnb_cluster:call(P, ?MODULE, stop_churn, [], 120000) of
        M when is_map(M) -> M;
        Other -> rel_checks:note("soak: churn stats lost: ~p", [Other]), #{churn_lost => 1}
    end.

%%% ------------------------------------------------------------ on a node

%% @doc Starts this node's churn process (registered as soak_churn).
-spec start_churn(node(), term()) -> ok.
start_churn(CN, Tag) ->
    Parent = self(),
    P = spawn(?MODULE, churn_init, [CN, Tag, Parent]),
    receive {P, ready} -> ok after 20000 -> exit(P, kill), error(churn_not_ready) end.

%% @doc Stops the churn: it releases every worker and name it holds and
%% returns its counters.
-spec stop_churn() -> map().
stop_churn() ->
    P = whereis(soak_churn),
    Ref = monitor(process, P),
    P ! {stop, self(), Ref},
    receive
        {Ref, Stats} -> demonitor(Ref, [flush]), Stats;
        {'DOWN', Ref, _, _, Why} -> error({churn_died, Why})
    after 110000 -> error(churn_stop_timeout)
    end.

-spec churn_init(node(), term(), pid()) -> ok.
churn_init(CN, Tag, Parent) ->
    register(soak_churn, self()),
    process_flag(trap_exit, true),
    %% Shared-registry writes go through the segment (same host).
    Reg = case cnode_registry:attach(soakreg, CN) of
              {ok, _} -> true;
              _ -> false
          end,
    Parent ! {self(), ready},
    churn(#{cn => CN, tag => Tag, i => 0, live => queue:new(), reg => Reg,
            stats => #{steps => 0, started => 0, stopped => 0, calls => 0, lost => 0,
                       wrong => 0, errors => 0, links => 0, lost_exit => 0, names => 0,
                       reg_writes => 0, reg_attach => case Reg of true -> 1; false -> 0 end}}).

churn(S = #{i := I}) ->
    receive
        {stop, From, Ref} ->
            S1 = release_all(S),
            From ! {Ref, maps:get(stats, S1)},
            ok;
        {'EXIT', _, _} ->
            churn(S) % the attachment's, if the C node went; nothing else is linked
    after ?PAUSE_MS ->
            churn(step(S#{i := I + 1}))
    end.

bump(S = #{stats := St}, K) -> S#{stats := maps:update_with(K, fun(V) -> V + 1 end, 1, St)}.

%% A call that must get the Expected reply; a timeout or exit is a lost reply.
call(S, Dest, Req, Expect) ->
    S1 = bump(S, calls),
    case catch gen_server:call(Dest, Req, 10000) of
        Expect -> S1;
        {'EXIT', {timeout, _}} -> note_bad(bump(S1, lost), {lost, Dest, Req});
        {'EXIT', R} -> note_bad(bump(S1, lost), {exit, Dest, Req, R});
        Other -> note_bad(bump(S1, wrong), {wrong, Dest, Req, Other})
    end.

note_bad(S = #{stats := St}, What) ->
    case maps:get(first_bad, St, undefined) of
        undefined -> S#{stats := St#{first_bad => What}};
        _ -> S
    end.

step(S0 = #{cn := CN, tag := Tag, i := I}) ->
    S = bump(S0, steps),
    Id = {soak, Tag, I},
    %% A C worker with a global name.
    S1 = case catch gen_server:call({cache_sup, CN}, {start, Id, I}, 10000) of
             {ok, W} ->
                 Sa = bump(S, started),
                 Sb = call(Sa, W, get, {ok, I}),
                 Sc = call(Sb, {global, {cache, Id}}, get, {ok, I}),
                 Sc#{live := queue:in(W, maps:get(live, Sc))};
             {'EXIT', _} = E -> note_bad(bump(bump(S, calls), lost), {start, E});
             Other -> note_bad(bump(S, errors), {start, Other})
         end,
    %% An echo call (the reply must be the request).
    S2 = call(S1, {echo, CN}, {soak, Tag, I}, {soak, Tag, I}),
    %% A global name taken and released by an Erlang process.
    Name = {soak_name, Tag, I},
    S3 = case global:register_name(Name, self()) of
             yes -> _ = global:unregister_name(Name), bump(S2, names);
             no -> note_bad(bump(S2, errors), {register_name, Name})
         end,
    %% A registry entry of a short-lived process: it goes when the process does.
    S4 = case maps:get(reg, S3) of
             true ->
                 Me = self(),
                 spawn(fun() -> Me ! {reg, self(), catch cnode_registry:register(soakreg, Id, I)} end),
                 receive
                     {reg, _, {ok, _}} -> bump(S3, reg_writes);
                     {reg, _, R} -> note_bad(bump(S3, errors), {registry, R})
                 after 10000 -> note_bad(bump(S3, errors), registry_timeout)
                 end;
             false -> S3
         end,
    case queue:len(maps:get(live, S4)) > ?LIVE of
        true -> stop_oldest(S4);
        false -> S4
    end.

%% Stops the oldest worker while linked to it: the stop is answered and the
%% exit signal arrives.
stop_oldest(S = #{live := Q}) ->
    {{value, W}, Q1} = queue:out(Q),
    S1 = bump(S#{live := Q1}, links),
    true = link(W),
    S2 = call(S1, W, stop, ok),
    receive
        {'EXIT', W, _} -> bump(S2, stopped)
    after 10000 -> note_bad(bump(S2, lost_exit), {no_exit, W})
    end.

release_all(S = #{live := Q}) ->
    case queue:is_empty(Q) of
        true -> S;
        false -> release_all(stop_oldest(S))
    end.
