%% @doc The integration suites' cluster helper: the shipped test kit
%% (erlang_side/src/cnode_bridge_test.erl: a private epmd on a free port,
%% Erlang nodes with unique names, the real `cnode' program, everything stopped
%% by process id when the test ends, even when it failed) under the names the
%% suites use, plus where the repository is.
%%
%% Usage (EUnit):
%%   {setup, fun() -> C = cnb_cluster:new(), ... C end, fun cnb_cluster:stop/1, ...}
-module(cnb_cluster).

-export([new/0, new/1, stop/1, with/1, root/0, unique_name/1, epmd_port/1, cookie/1, hostname/0]).
-export([start_node/2, stop_node/2, call/5, call/4]).
-export([start_cnode/2, stop_cnode/2, kill_cnode/2, cnode_output/2, cnode_os_pid/2,
         cnode_alive/2, wait_cnode_exit/3]).
-export([os_pid_alive/1, wait_until/2, free_port/0]).

-type ctx() :: cnode_bridge_test:ctx().
-export_type([ctx/0]).

%% @doc Starts a context with a private epmd and a random cookie, owned by the
%% calling process (it stops everything when that process ends).
-spec new() -> ctx().
new() -> new(#{}).

%% @doc As new/0; Opts: #{cookie => string(), epmd_port => integer(),
%% owner => pid() | none, log_dir => file:filename()}. With epmd_port the
%% context uses that (already running) epmd and does not own it, e.g. the one
%% the ExUnit runner node itself is registered with; owner none: only stop/1
%% (or the VM's end) stops it, for a context made by a process that ends
%% before the tests do; log_dir: every node's log is kept there
%% (cnode_bridge_test:new/1).
-spec new(map()) -> ctx().
new(Opts) ->
    Kit = maps:with([cookie, owner, log_dir], Opts),
    cnode_bridge_test:new(Kit#{epmd => maps:get(epmd_port, Opts, private)}).

-spec stop(ctx()) -> ok.
stop(Ctx) -> cnode_bridge_test:stop(Ctx).

%% Runs F(Ctx) with a fresh context and stops everything it started, however
%% F ends. Returns what F returns.
-spec with(fun((ctx()) -> T)) -> T.
with(F) -> cnode_bridge_test:with(#{epmd => private}, F).

%% @doc The repository root (CNB_ROOT, or found from this module's location).
-spec root() -> file:filename().
root() ->
    case os:getenv("CNB_ROOT") of
        false -> find_root(filename:dirname(code:which(?MODULE)));
        R -> R
    end.

find_root("/") -> error(no_repo_root);
find_root(Dir) ->
    case filelib:is_regular(filename:join(Dir, "rebar.config")) andalso
         filelib:is_dir(filename:join(Dir, "core")) of
        true -> Dir;
        false -> find_root(filename:dirname(Dir))
    end.

-spec unique_name(string()) -> string().
unique_name(Prefix) -> cnode_bridge_test:unique_name(Prefix).

-spec epmd_port(ctx()) -> non_neg_integer().
epmd_port(Ctx) -> cnode_bridge_test:epmd_port(Ctx).

-spec cookie(ctx()) -> string().
cookie(Ctx) -> cnode_bridge_test:cookie(Ctx).

-spec hostname() -> string().
hostname() -> cnode_bridge_test:hostname().

%% @doc Starts an Erlang node: cnode_bridge_test:start_node/2 (options name,
%% longnames, host, cookie, args, env, exec). Returns {ok, PeerPid, Node}.
-spec start_node(ctx(), map()) -> {ok, pid(), node()} | {error, term()}.
start_node(Ctx, Opts) -> cnode_bridge_test:start_node(Ctx, Opts).

-spec stop_node(ctx(), pid()) -> ok.
stop_node(Ctx, Peer) -> cnode_bridge_test:stop_node(Ctx, Peer).

-spec call(pid(), module(), atom(), [term()]) -> term().
call(Peer, M, F, A) -> cnode_bridge_test:call(Peer, M, F, A).

-spec call(pid(), module(), atom(), [term()], timeout()) -> term().
call(Peer, M, F, A, Timeout) -> cnode_bridge_test:call(Peer, M, F, A, Timeout).

%% @doc Starts the real cnode program (erlang_side/priv/cnode) with exactly
%% Args (strings), with ERL_EPMD_PORT set to the context's epmd. Unless Opts
%% has wait_ready => false, waits for its `READY <node>' line. Opts:
%% wait_ready, timeout (ms), exe (another program to run instead), env.
-spec start_cnode(ctx(), {[string()], map()} | [string()]) ->
          {ok, port(), node() | undefined} | {error, term()}.
start_cnode(Ctx, Args) when is_list(Args) -> start_cnode(Ctx, {Args, #{}});
start_cnode(Ctx, {Args, Opts}) ->
    Exe = filename:join([root(), "erlang_side", "priv", "cnode"]),
    cnode_bridge_test:start_cnode(Ctx, maps:merge(#{exe => Exe}, Opts#{argv => Args})).

-spec stop_cnode(ctx(), port()) -> {ok, integer() | undefined}.
stop_cnode(Ctx, Port) -> cnode_bridge_test:stop_cnode(Ctx, Port).

-spec kill_cnode(ctx(), port()) -> {ok, integer() | undefined}.
kill_cnode(Ctx, Port) -> cnode_bridge_test:kill_cnode(Ctx, Port).

-spec cnode_output(ctx(), port()) -> [binary()].
cnode_output(Ctx, Port) -> cnode_bridge_test:cnode_output(Ctx, Port).

-spec cnode_os_pid(ctx(), port()) -> integer().
cnode_os_pid(Ctx, Port) -> cnode_bridge_test:cnode_os_pid(Ctx, Port).

-spec cnode_alive(ctx(), port()) -> boolean().
cnode_alive(Ctx, Port) -> cnode_bridge_test:cnode_alive(Ctx, Port).

-spec wait_cnode_exit(ctx(), port(), timeout()) -> {ok, integer()} | timeout.
wait_cnode_exit(Ctx, Port, Timeout) -> cnode_bridge_test:wait_cnode_exit(Ctx, Port, Timeout).

-spec os_pid_alive(integer()) -> boolean().
os_pid_alive(OsPid) -> cnode_bridge_test:os_pid_alive(OsPid).

-spec wait_until(fun(() -> boolean()), non_neg_integer()) -> boolean().
wait_until(Fun, Timeout) -> cnode_bridge_test:wait_until(Fun, Timeout).

-spec free_port() -> inet:port_number().
free_port() -> cnode_bridge_test:free_port().
