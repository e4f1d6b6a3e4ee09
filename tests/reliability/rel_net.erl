%% @doc The reliability suites' cluster: three Erlang nodes and the real cnode,
%% each in a network namespace of its own on one bridge (tests/reliability/netns.sh),
%% each namespace with its own epmd. Nodes are driven through OTP `peer' over
%% standard_io, so cutting the network never cuts the test off from them.
%% The same cluster without namespaces (the atom `local' instead of a net():
%% 127.0.0.1, one private epmd) serves kill_storm_tests where no root is at hand.
%% Used by partition_tests, kill_storm_tests (and their checks in rel_checks).
-module(rel_net).

-export([can/0, up/0, down/1, cluster/2, stop_cluster/1]).
-export([start_erl/3, restart_erl/2, start_c/2, restart_c/1, cut/2, heal/2, block/3, unblock/3,
         reset/1]).
-export([addr/1, ns/2, peers/1, peer/2, node_of/2, os_pid/2, sh/1]).

-define(EPMD_PORT, 14369). % inside our namespaces only
-define(NODES, 4).         % namespaces 1..3: Erlang nodes, 4: the C node

-type net() :: #{tag := string(), owner := pid(), epmd := non_neg_integer()}.
-export_type([net/0]).

%%% ----------------------------------------------------------------- network

script() -> filename:join([cnb_cluster:root(), "tests", "reliability", "netns.sh"]).

%% @doc Runs a command; returns {Status, Output}.
-spec sh([string()]) -> {integer(), string()}.
sh(Args) ->
    Port = open_port({spawn_executable, hd(Args)},
                     [{args, tl(Args)}, exit_status, stderr_to_stdout, binary]),
    sh_collect(Port, []).

sh_collect(Port, Acc) ->
    receive
        {Port, {data, D}} -> sh_collect(Port, [D | Acc]);
        {Port, {exit_status, S}} -> {S, binary_to_list(iolist_to_binary(lists:reverse(Acc)))}
    after 30000 -> {124, "timeout"}
    end.

netns(Args) -> sh([script() | Args]).

%% @doc ok when namespaces can be made here, else {skip, Why}.
-spec can() -> ok | {skip, string()}.
can() ->
    case netns(["can"]) of
        {0, _} -> ok;
        {_, Why} -> {skip, string:trim(Why)}
    end.

tag() ->
    case os:getenv("CNB_NETNS_TAG") of
        false -> "e" ++ lists:sublist(os:getpid(), max(1, length(os:getpid()) - 4), 5);
        T -> T
    end.

%% @doc Makes the namespaces and starts an epmd in each (owned by a process
%% that dies with the caller, closing their guard ports).
-spec up() -> net().
up() ->
    Tag = tag(),
    _ = netns(["down", Tag]), % what a killed earlier run of ours left
    case netns(["up", Tag, integer_to_list(?NODES)]) of
        {0, _} -> ok;
        {_, Err} -> _ = netns(["down", Tag]), error({netns_up, Err})
    end,
    Parent = self(),
    Owner = spawn(fun() -> owner(Parent, Tag) end),
    receive
        {Owner, ok} -> #{tag => Tag, owner => Owner, epmd => ?EPMD_PORT};
        {Owner, Err2} -> down(#{tag => Tag, owner => Owner}), error({epmd, Err2})
    after 30000 -> down(#{tag => Tag, owner => Owner}), error(epmd_timeout)
    end.

owner(Parent, Tag) ->
    MRef = monitor(process, Parent),
    Epmd = os:find_executable("epmd"),
    %% Under the test kit's guard: killed when this process's ports close.
    Ports = [case cnode_bridge_test_ctx:guard_port(
                    null, ip(), [{args, ["netns", "exec", ns(Tag, I), Epmd,
                                         "-port", integer_to_list(?EPMD_PORT)]}]) of
                 {ok, P, OsPid} -> {P, OsPid};
                 {error, _} -> {undefined, undefined}
             end || I <- lists:seq(1, ?NODES)],
    Up = lists:all(fun(I) -> cnb_cluster:wait_until(fun() -> epmd_up(Tag, I) end, 5000) end,
                   lists:seq(1, ?NODES)),
    Parent ! {self(), case Up of true -> ok; false -> not_up end},
    receive
        stop -> ok;
        {'DOWN', MRef, _, _, _} -> ok
    end,
    [os:cmd("kill -9 " ++ integer_to_list(Pid)) || {_, Pid} <- Ports, is_integer(Pid)],
    [catch port_close(P) || {P, _} <- Ports, is_port(P)],
    ok.

epmd_up(Tag, I) ->
    {S, _} = sh([ip(), "netns", "exec", ns(Tag, I), os:find_executable("epmd"),
                 "-port", integer_to_list(?EPMD_PORT), "-names"]),
    S =:= 0.

%% @doc Stops the epmds and removes every namespace and link of the network.
-spec down(map()) -> ok.
down(#{tag := Tag, owner := Owner}) ->
    MRef = monitor(process, Owner),
    Owner ! stop,
    receive {'DOWN', MRef, _, _, _} -> ok after 10000 -> ok end,
    {0, _} = netns(["down", Tag]),
    ok.

ip() -> os:find_executable("ip", "/usr/sbin:/sbin:/usr/bin:/bin").

-spec ns(net() | string(), pos_integer()) -> string().
ns(local, _) -> error(no_namespaces);
ns(#{tag := Tag}, I) -> ns(Tag, I);
ns(Tag, I) -> "cnb" ++ Tag ++ "n" ++ integer_to_list(I).

%% @doc The address of namespace I.
-spec addr(pos_integer()) -> string().
addr(I) -> "10.213.7." ++ integer_to_list(1 + I).

%% @doc Cuts namespace I off (its link down) / heals it.
cut(#{tag := Tag}, I) -> {0, _} = netns(["cut", Tag, integer_to_list(I)]), ok.
heal(#{tag := Tag}, I) -> {0, _} = netns(["heal", Tag, integer_to_list(I)]), ok.

%% @doc Every link up and every blackhole route gone (after a failed test).
-spec reset(net()) -> ok.
reset(#{tag := Tag}) -> {0, _} = netns(["reset", Tag]), ok.

%% @doc Namespace I drops what it sends to namespace J / stops doing so.
block(#{tag := Tag}, I, J) -> {0, _} = netns(["block", Tag, integer_to_list(I), addr(J)]), ok.
unblock(#{tag := Tag}, I, J) -> {0, _} = netns(["unblock", Tag, integer_to_list(I), addr(J)]), ok.

%%% ----------------------------------------------------------------- cluster

%% @doc Starts Erlang nodes n1..n3 (namespaces 1..3, a full mesh) and the C
%% node in namespace 4 (--demo, anchored at n1). Opts: cname (the C node's
%% name part, default "c1": it sorts below the Erlang nodes' n*), ticktime
%% (seconds, default 4), erl_args (more args for the Erlang nodes), visible
%% (true: the C node runs --visible, and the Erlang nodes start pg).
%% Returns the cluster map used by the other functions.
-spec cluster(net() | local, map()) -> map().
cluster(Net, Opts) ->
    Cookie = cnb_cluster:unique_name("relcookie"),
    Logs = logs(),
    Ctx = case Net of
              local -> cnb_cluster:new(Logs#{cookie => Cookie});
              _ -> cnb_cluster:new(Logs#{epmd_port => maps:get(epmd, Net), cookie => Cookie})
          end,
    Cl0 = #{net => Net, ctx => Ctx, opts => Opts, erl => #{}},
    Cl1 = lists:foldl(fun(I, Cl) -> start_erl(Cl, I, "n" ++ integer_to_list(I)) end,
                      Cl0, [1, 2, 3]),
    [P1, _, _] = peers(Cl1),
    [pong = cnb_cluster:call(P1, net_adm, ping, [node_of(Cl1, I)]) || I <- [2, 3]],
    [ok = cnb_cluster:call(P, global, sync, []) || P <- peers(Cl1)],
    start_c(Cl1, node_of(Cl1, 1)).

%% With CNB_REL_LOGS set (scripts/run-tests sets it to
%% build/test-logs/reliability-nodes), each cluster's node logs (the Erlang
%% nodes', and the C node's as ip.log: it runs under ip netns exec) are kept
%% in a directory of their own there, so that a failed check can be read
%% against what each node said.
logs() ->
    case os:getenv("CNB_REL_LOGS") of
        false -> #{};
        "" -> #{};
        Dir -> #{log_dir => filename:join(Dir, cnb_cluster:unique_name("cluster"))}
    end.

%% @doc Starts (or restarts) Erlang node I (1..3) in its namespace as Name_<unique>@addr(I).
-spec start_erl(map(), pos_integer(), string()) -> map().
start_erl(Cl = #{net := Net, ctx := Ctx, opts := Opts, erl := Erl}, I, Name) ->
    Tick = integer_to_list(maps:get(ticktime, Opts, 4)),
    Args = ["-connect_all", "true", "-kernel", "net_ticktime", Tick,
            "-pa", filename:dirname(code:which(?MODULE))]
        ++ [A || maps:get(visible, Opts, false), A <- ["-kernel", "start_pg", "true"]]
        ++ maps:get(erl_args, Opts, []),
    Where = case Net of
                local -> #{host => "127.0.0.1"};
                _ -> #{host => addr(I),
                       exec => {ip(), ["netns", "exec", ns(Net, I), os:find_executable("erl")]}}
            end,
    {ok, P, N} = cnb_cluster:start_node(Ctx, Where#{name => Name, longnames => true, args => Args}),
    Cl#{erl := Erl#{I => {P, N}}}.

%% @doc Starts a new Erlang node I (after the old one died) and joins it to
%% the others.
-spec restart_erl(map(), pos_integer()) -> map().
restart_erl(Cl = #{erl := Erl}, I) ->
    Others = [N || {J, {_, N}} <- maps:to_list(Erl), J =/= I],
    Cl1 = start_erl(Cl, I, "n" ++ integer_to_list(I)),
    P = peer(Cl1, I),
    [pong = cnb_cluster:call(P, net_adm, ping, [N]) || N <- Others],
    ok = cnb_cluster:call(P, global, sync, [], 60000),
    Cl1.

%% @doc Starts the C node in namespace 4, anchored at Anchor; waits until the
%% anchor sees it. Cl gets c_port, c_node (the same name again when Cl has one).
-spec start_c(map(), node()) -> map().
start_c(Cl = #{net := Net, ctx := Ctx, opts := Opts}, Anchor) ->
    Host = case Net of local -> "127.0.0.1"; _ -> addr(4) end,
    Name = case Cl of
               #{c_node := Old} -> atom_to_list(Old);
               _ -> maps:get(cname, Opts, "c1") ++ "_" ++ os:getpid() ++ "_"
                        ++ integer_to_list(erlang:unique_integer([positive])) ++ "@" ++ Host
           end,
    Exe = filename:join([cnb_cluster:root(), "erlang_side", "priv", "cnode"]),
    Args = ["--name", Name, "--cookie", cnb_cluster:cookie(Ctx),
            "--ticktime", integer_to_list(maps:get(ticktime, Opts, 4)),
            "--demo", "--connect", atom_to_list(Anchor)]
        ++ ["--visible" || maps:get(visible, Opts, false)],
    {ok, Port, CN} = case Net of
                         local -> cnb_cluster:start_cnode(Ctx, Args);
                         _ -> cnb_cluster:start_cnode(
                                Ctx, {["netns", "exec", ns(Net, 4), Exe | Args], #{exe => ip()}})
                     end,
    AP = peer_of(Cl, Anchor),
    true = cnb_cluster:wait_until(
             fun() -> lists:member(CN, cnb_cluster:call(AP, erlang, nodes, [connected])) end, 10000),
    _ = [synced(P, CN) || maps:get(visible, Opts, false), P <- peers(Cl)],
    Cl#{c_port => Port, c_node => CN, anchor => Anchor}.

%% A visible C node registers through global's protocol on the nodes whose
%% sync session with it ended (as an Erlang node that just joined registers
%% where it is known): before the test registers from C, every node's session
%% with C has ended (global:sync/0 there), and C has taken that node's
%% `resolved` (a call to C's global_name_server comes after it on the same
%% connection).
synced(P, CN) ->
    true = cnb_cluster:wait_until(
             fun() -> lists:member(CN, cnb_cluster:call(P, erlang, nodes, [])) end, 20000),
    ok = cnb_cluster:call(P, global, sync, [], 60000),
    true = cnb_cnode:global_resolved(P, CN).

%% @doc Starts the C node again under the same name (a new creation) after
%% the old one was stopped or killed; anchored at the first live Erlang node.
-spec restart_c(map()) -> map().
restart_c(Cl = #{erl := Erl}) ->
    [{_, Anchor} | _] = [PN || {_, PN} <- lists:sort(maps:to_list(Erl))],
    start_c(maps:without([c_port], Cl), Anchor).

%% @doc Stops every node and the C node (by pid); the network stays.
-spec stop_cluster(map()) -> ok.
stop_cluster(#{ctx := Ctx}) -> cnb_cluster:stop(Ctx).

%% @doc The peer handles of the live Erlang nodes, by index.
-spec peers(map()) -> [pid()].
peers(#{erl := Erl}) -> [P || {_, {P, _}} <- lists:sort(maps:to_list(Erl))].

-spec peer(map(), pos_integer()) -> pid().
peer(#{erl := Erl}, I) -> element(1, maps:get(I, Erl)).

-spec node_of(map(), pos_integer()) -> node().
node_of(#{erl := Erl}, I) -> element(2, maps:get(I, Erl)).

peer_of(#{erl := Erl}, Node) ->
    hd([P || {_, {P, N}} <- maps:to_list(Erl), N =:= Node]).

%% @doc The OS pid of Erlang node I.
-spec os_pid(map(), pos_integer()) -> integer().
os_pid(Cl, I) -> list_to_integer(cnb_cluster:call(peer(Cl, I), os, getpid, [])).
