%% @doc The checks every reliability scenario ends with (partition_tests,
%% kill_storm_tests, soak): all nodes agree on every :global name, no name or
%% shared-registry entry belongs to a dead process; plus the small helpers those
%% checks run on the nodes themselves (view/0, holder/0, dead/2, ...).
-module(rel_checks).

%% Run on the driver.
-export([agree/2, views/1, stale_names/2, stale_entries/2, reg_entries/2, note/2,
         time_until/2, holder_msgs_on/2]).
%% Run on a node (through peer).
-export([view/0, holder/0, holder_msgs/1, register_as/1, register_as/2, dead/2,
         scan_registry/1, keep_higher/3, wait_view/3, attach/1, reg_holders/2]).

%%% ----------------------------------------------------------- on the driver

%% @doc Each peer's view of :global (see view/0).
-spec views([pid()]) -> [[{term(), pid()}] | {error, term()}].
views(Peers) ->
    [try cnb_cluster:call(P, ?MODULE, view, [], 15000)
     catch C:R -> {error, {C, R}}
     end || P <- Peers].

%% @doc Waits up to Ms until every peer reports the same view; returns
%% {ok, View} or {disagree, Views} (the last ones seen).
-spec agree([pid()], non_neg_integer()) -> {ok, list()} | {disagree, list()}.
agree(Peers, Ms) ->
    Deadline = erlang:monotonic_time(millisecond) + Ms,
    agree_(Peers, Deadline).

agree_(Peers, Deadline) ->
    Vs = views(Peers),
    case lists:usort(Vs) of
        [V] when is_list(V) -> {ok, V};
        _ ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> {disagree, Vs};
                false -> timer:sleep(100), agree_(Peers, Deadline)
            end
    end.

%% @doc The names of View whose process is dead, as seen from peer P.
-spec stale_names(pid(), [{term(), pid()}]) -> [{term(), pid(), term()}].
stale_names(P, View) ->
    Dead = cnb_cluster:call(P, ?MODULE, dead, [[Pid || {_, Pid} <- View], 1000], 30000),
    [{N, Pid, maps:get(Pid, Dead)} || {N, Pid} <- View, maps:is_key(Pid, Dead)].

%% @doc Every entry {Key, Pid, Value} of the C node's shared registry, read
%% through its cnode_registry worker from peer P.
-spec reg_entries(pid(), node()) -> [{term(), pid(), term()}].
reg_entries(P, CN) -> cnb_cluster:call(P, ?MODULE, scan_registry, [CN], 60000).

%% @doc The entries of the C node's registry whose owner is dead (seen from P).
-spec stale_entries(pid(), node()) -> [{term(), pid(), term()}].
stale_entries(P, CN) ->
    Es = reg_entries(P, CN),
    Dead = cnb_cluster:call(P, ?MODULE, dead, [lists:usort([O || {_, O, _} <- Es]), 1000], 30000),
    [E || E = {_, O, _} <- Es, maps:is_key(O, Dead)].

%% @doc The messages holder H on peer P got ([] if it is gone).
-spec holder_msgs_on(pid(), pid()) -> [term()].
holder_msgs_on(P, H) ->
    case cnb_cluster:call(P, ?MODULE, holder_msgs, [H]) of
        L when is_list(L) -> L;
        _ -> []
    end.

%% @doc Prints one line of results for the log and docs/RELIABILITY.md.
-spec note(string(), list()) -> ok.
note(Fmt, Args) -> io:format(user, "reliability: " ++ Fmt ++ "~n", Args).

%% @doc Polls Fun every 2 ms; ms until it returned true, or timeout after Limit ms.
-spec time_until(fun(() -> boolean()), non_neg_integer()) -> non_neg_integer() | timeout.
time_until(Fun, Limit) ->
    T0 = erlang:monotonic_time(microsecond),
    case cnb_cluster:wait_until(Fun, Limit) of
        true -> (erlang:monotonic_time(microsecond) - T0) div 1000;
        false -> timeout
    end.

%%% -------------------------------------------------------------- on a node

%% @doc This node's :global names with their pids, sorted.
-spec view() -> [{term(), pid()}].
view() ->
    lists:sort([{N, P} || N <- global:registered_names(),
                          P <- [global:whereis_name(N)], is_pid(P)]).

%% @doc Waits (on a node) up to Ms until Pred(view()) holds; returns the ms taken
%% or timeout.
-spec wait_view(fun(([{term(), pid()}]) -> boolean()), non_neg_integer(), integer()) ->
          non_neg_integer() | timeout.
wait_view(Pred, Ms, T0) ->
    case Pred(view()) of
        true -> os:system_time(millisecond) - T0;
        false ->
            case os:system_time(millisecond) - T0 > Ms of
                true -> timeout;
                false -> timer:sleep(2), wait_view(Pred, Ms, T0)
            end
    end.

%% @doc A process that keeps every message it gets (holder_msgs/1 reads them).
-spec holder() -> pid().
holder() -> spawn(fun() -> holder_loop([]) end).

holder_loop(Acc) ->
    receive
        {'$holder_msgs', From, Ref} -> From ! {Ref, lists:reverse(Acc)}, holder_loop(Acc);
        M -> holder_loop([M | Acc])
    end.

%% @doc The messages Holder got so far, oldest first; dead if it is dead.
-spec holder_msgs(pid()) -> [term()] | dead.
holder_msgs(H) ->
    Ref = monitor(process, H),
    H ! {'$holder_msgs', self(), Ref},
    receive
        {Ref, Ms} -> demonitor(Ref, [flush]), Ms;
        {'DOWN', Ref, _, _, _} -> dead
    after 5000 -> demonitor(Ref, [flush]), timeout
    end.

%% @doc Attaches this node to CN's registry as relreg (unless it is already):
%% the attachment is linked to a holder that traps exits, so its end is kept
%% as a message ({'EXIT', Attachment, Reason}). Returns {ok, Keeper}.
-spec attach(node()) -> {ok, pid()} | {error, term()}.
attach(CN) ->
    Parent = self(),
    K = spawn(fun() ->
                      process_flag(trap_exit, true),
                      R = case whereis(relreg) of
                              undefined -> cnode_registry:attach(relreg, CN);
                              Pid -> {ok, Pid}
                          end,
                      Parent ! {attached, self(), R},
                      holder_loop([])
              end),
    receive
        {attached, K, {ok, _}} -> {ok, K};
        {attached, K, Err} -> Err
    after 20000 -> {error, attach_timeout}
    end.

%% @doc N holders, each registered in relreg (see attach/1) under
%% {Tag, node(), I}; returns their pids.
-spec reg_holders(term(), pos_integer()) -> [pid()].
reg_holders(Tag, N) ->
    Me = self(),
    Hs = [spawn(fun() ->
                        Me ! {registered, self(), cnode_registry:register(relreg, {Tag, node(), I}, I)},
                        holder_loop([])
                end) || I <- lists:seq(1, N)],
    [{ok, _} = receive {registered, H, R} -> R after 20000 -> timeout end || H <- Hs],
    Hs.

%% @doc A new holder registered globally as Name (default resolver, or
%% Resolver); returns {Pid, yes | no}.
-spec register_as(term()) -> {pid(), yes | no}.
register_as(Name) ->
    H = holder(),
    {H, global:register_name(Name, H)}.

-spec register_as(term(), fun()) -> {pid(), yes | no}.
register_as(Name, Resolver) ->
    H = holder(),
    {H, global:register_name(Name, H, Resolver)}.

%% @doc The pids of Pids that are dead, as a map Pid => DOWN reason, found by
%% monitoring them all at once and waiting Ms for DOWN messages (a dead process,
%% local or remote, C or Erlang, gives one at once; noconnection counts too).
-spec dead([pid()], non_neg_integer()) -> #{pid() => term()}.
dead(Pids, Ms) ->
    Refs = maps:from_list([{monitor(process, P), P} || P <- lists:usort(Pids)]),
    Deadline = erlang:monotonic_time(millisecond) + Ms,
    Dead = collect_down(Refs, Deadline, #{}),
    [demonitor(R, [flush]) || R <- maps:keys(Refs)],
    Dead.

collect_down(Refs, _Deadline, Acc) when map_size(Refs) =:= map_size(Acc) -> Acc;
collect_down(Refs, Deadline, Acc) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    receive
        {'DOWN', R, process, _, Why} when is_map_key(R, Refs) ->
            collect_down(Refs, Deadline, Acc#{maps:get(R, Refs) => Why})
    after Left -> Acc
    end.

%% @doc All entries of CN's registry, through its worker's scan operation.
-spec scan_registry(node()) -> [{term(), pid(), term()}].
scan_registry(CN) -> scan(CN, 0, []).

scan(CN, Cursor, Acc) ->
    case gen_server:call({cnode_registry, CN}, {scan, Cursor, 500}, 20000) of
        {Es, done} -> lists:append(lists:reverse([Es | Acc]));
        {Es, Next} -> scan(CN, Next, [Es | Acc])
    end.

%% @doc A user resolver: the pid on the node whose name sorts higher keeps the
%% name, the other is killed (the opposite of random_exit_name's choice).
-spec keep_higher(term(), pid(), pid()) -> pid().
keep_higher(_Name, P1, P2) ->
    {Lo, Hi} = case node(P1) < node(P2) of true -> {P1, P2}; false -> {P2, P1} end,
    exit(Lo, kill),
    Hi.
