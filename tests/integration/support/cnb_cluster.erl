%% @doc Test helper used by every integration suite: a private epmd on a free
%% port, Erlang nodes with unique names (OTP `peer'), the real `cnode' program, and
%% one call that stops all of it by process id, even when a test failed.
%%
%% A cluster context is a process that owns every port it opens. epmd and cnode
%% run under scripts/guard, which kills its child when the port closes, so even a
%% crashed test VM leaves nothing behind; peer nodes use the standard_io
%% connection and halt when their controlling process goes away.
%%
%% Usage (EUnit):
%%   {setup, fun() -> C = cnb_cluster:new(), ... C end, fun cnb_cluster:stop/1, ...}
-module(cnb_cluster).
-behaviour(gen_server).

-export([new/0, new/1, stop/1, with/1, root/0, unique_name/1, epmd_port/1, cookie/1, hostname/0]).
-export([start_node/2, stop_node/2, call/5, call/4]).
-export([start_cnode/2, stop_cnode/2, kill_cnode/2, cnode_output/2, cnode_os_pid/2,
         cnode_alive/2, wait_cnode_exit/3]).
-export([os_pid_alive/1, wait_until/2, free_port/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-type ctx() :: pid().
-type cnode() :: #{port := port(), os_pid := integer(), node := node() | undefined}.
-export_type([ctx/0, cnode/0]).

-record(st, {epmd_port :: undefined | port(),
             epmd_os_pid :: undefined | integer(),
             epmd_tcp :: non_neg_integer(),
             cookie :: string(),
             peers = [] :: [{pid(), node()}],
             cnodes = #{} :: #{port() => #{os_pid := integer(), node := term(),
                                           out := [binary()], exit := undefined | integer()}}}).

%%% ---------------------------------------------------------------- API

%% @doc Starts a context with a private epmd and a random cookie.
-spec new() -> ctx().
new() -> new(#{}).

%% @doc As new/0; Opts: #{cookie => string(), epmd_port => integer()}. With
%% epmd_port the context uses that (already running) epmd and does not own it,
%% e.g. the one the ExUnit runner node itself is registered with.
-spec new(map()) -> ctx().
new(Opts) ->
    {ok, Pid} = gen_server:start(?MODULE, Opts, []),
    Pid.

%% @doc Stops every node, cnode and epmd the context started (by process id).
-spec stop(ctx()) -> ok.
stop(Ctx) ->
    catch gen_server:call(Ctx, stop_all, 60000),
    catch gen_server:stop(Ctx),
    ok.

%% Runs F(Ctx) with a fresh context and stops everything it started, however
%% F ends. Returns what F returns.
-spec with(fun((ctx()) -> T)) -> T.
with(F) ->
    Ctx = new(),
    try F(Ctx)
    after stop(Ctx)
    end.

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

%% @doc A node-name-safe unique name: Prefix_<os pid>_<counter>.
-spec unique_name(string()) -> string().
unique_name(Prefix) ->
    lists:flatten(io_lib:format("~s_~s_~b",
                                [Prefix, os:getpid(), erlang:unique_integer([positive])])).

-spec epmd_port(ctx()) -> non_neg_integer().
epmd_port(Ctx) -> gen_server:call(Ctx, epmd_port).

-spec cookie(ctx()) -> string().
cookie(Ctx) -> gen_server:call(Ctx, cookie).

%% @doc The short host name Erlang uses for -sname nodes.
-spec hostname() -> string().
hostname() ->
    {ok, H} = inet:gethostname(),
    hd(string:split(H, ".")).

%% @doc Starts an Erlang node. Opts: name (prefix, default "n"), longnames
%% (boolean; the host is then 127.0.0.1 unless host is given), host, cookie,
%% args (extra erl args), env, exec (peer's exec option: e.g. {"ip", ["netns",
%% "exec", Ns, Erl]} starts the node in a network namespace; tests/reliability),
%% exact_name (true: name is the whole name, already unique, e.g. one a C node
%% was told to connect to before the node existed).
%% Returns {ok, PeerPid, Node}.
-spec start_node(ctx(), map()) -> {ok, pid(), node()} | {error, term()}.
start_node(Ctx, Opts) -> gen_server:call(Ctx, {start_node, Opts}, 60000).

-spec stop_node(ctx(), pid()) -> ok.
stop_node(Ctx, Peer) -> gen_server:call(Ctx, {stop_node, Peer}, 60000).

%% @doc Runs M:F(A) on the peer node.
-spec call(pid(), module(), atom(), [term()]) -> term().
call(Peer, M, F, A) -> call(Peer, M, F, A, 30000).

-spec call(pid(), module(), atom(), [term()], timeout()) -> term().
call(Peer, M, F, A, Timeout) -> peer:call(Peer, M, F, A, Timeout).

%% @doc Starts the real cnode program (erlang_side/priv/cnode) with Args (strings),
%% with ERL_EPMD_PORT set to the private epmd. Unless Opts has wait_ready =>
%% false, waits for its `READY <node>' line. Opts: wait_ready, timeout (ms),
%% exe (another program to run instead, e.g. a test tool), env.
-spec start_cnode(ctx(), {[string()], map()} | [string()]) ->
          {ok, port(), node() | undefined} | {error, term()}.
start_cnode(Ctx, Args) when is_list(Args) -> start_cnode(Ctx, {Args, #{}});
start_cnode(Ctx, {Args, Opts}) ->
    gen_server:call(Ctx, {start_cnode, Args, Opts}, maps:get(timeout, Opts, 15000) + 5000).

%% @doc Stops a cnode with SIGTERM (SIGKILL after 5 s); returns its exit status.
-spec stop_cnode(ctx(), port()) -> {ok, integer() | undefined}.
stop_cnode(Ctx, Port) -> gen_server:call(Ctx, {stop_cnode, Port, "TERM"}, 20000).

%% @doc kill -9 of the cnode process.
-spec kill_cnode(ctx(), port()) -> {ok, integer() | undefined}.
kill_cnode(Ctx, Port) -> gen_server:call(Ctx, {stop_cnode, Port, "KILL"}, 20000).

%% @doc Everything the cnode printed so far (stdout and stderr), as lines.
-spec cnode_output(ctx(), port()) -> [binary()].
cnode_output(Ctx, Port) -> gen_server:call(Ctx, {cnode_output, Port}).

-spec cnode_os_pid(ctx(), port()) -> integer().
cnode_os_pid(Ctx, Port) -> gen_server:call(Ctx, {cnode_os_pid, Port}).

-spec cnode_alive(ctx(), port()) -> boolean().
cnode_alive(Ctx, Port) -> gen_server:call(Ctx, {cnode_alive, Port}).

%% @doc Waits until the cnode exits by itself; returns its exit status.
-spec wait_cnode_exit(ctx(), port(), timeout()) -> {ok, integer()} | timeout.
wait_cnode_exit(Ctx, Port, Timeout) ->
    Exit = fun() -> gen_server:call(Ctx, {cnode_exit, Port}) end,
    case wait_until(fun() -> Exit() =/= undefined end, Timeout) of
        true -> {ok, Exit()};
        false -> timeout
    end.

-spec os_pid_alive(integer()) -> boolean().
os_pid_alive(OsPid) ->
    filelib:is_dir("/proc/" ++ integer_to_list(OsPid)) andalso
        not is_zombie(OsPid).

is_zombie(OsPid) ->
    case file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/stat") of
        {ok, Stat} ->
            [_, Rest] = binary:split(Stat, <<") ">>),
            binary:first(Rest) =:= $Z;
        _ -> true
    end.

%% @doc Polls Fun every 5 ms until it returns true or Timeout ms pass.
-spec wait_until(fun(() -> boolean()), non_neg_integer()) -> boolean().
wait_until(Fun, Timeout) ->
    Deadline = erlang:monotonic_time(millisecond) + Timeout,
    wait_until_(Fun, Deadline).

wait_until_(Fun, Deadline) ->
    case catch Fun() of
        true -> true;
        _ ->
            case erlang:monotonic_time(millisecond) >= Deadline of
                true -> false;
                false -> timer:sleep(5), wait_until_(Fun, Deadline)
            end
    end.

%%% ---------------------------------------------------------------- server

-spec init(map()) -> {ok, #st{}} | {stop, term()}.
init(Opts) ->
    process_flag(trap_exit, true),
    Cookie = maps:get(cookie, Opts, unique_name("cookie")),
    case maps:get(epmd_port, Opts, undefined) of
        undefined -> init_epmd(Cookie);
        Tcp -> {ok, #st{epmd_tcp = Tcp, cookie = Cookie}}
    end.

init_epmd(Cookie) ->
    case start_epmd() of
        {ok, Port, OsPid, Tcp} ->
            {ok, #st{epmd_port = Port, epmd_os_pid = OsPid, epmd_tcp = Tcp, cookie = Cookie}};
        {error, R} ->
            {stop, R}
    end.

-spec handle_call(term(), gen_server:from(), #st{}) -> {reply, term(), #st{}}.
handle_call(epmd_port, _From, St) -> {reply, St#st.epmd_tcp, St};
handle_call(cookie, _From, St) -> {reply, St#st.cookie, St};
handle_call({start_node, Opts}, _From, St) ->
    case do_start_node(Opts, St) of
        {ok, Peer, Node} -> {reply, {ok, Peer, Node}, St#st{peers = [{Peer, Node} | St#st.peers]}};
        Err -> {reply, Err, St}
    end;
handle_call({stop_node, Peer}, _From, St) ->
    catch peer:stop(Peer),
    {reply, ok, St#st{peers = lists:keydelete(Peer, 1, St#st.peers)}};
handle_call({start_cnode, Args, Opts}, _From, St) ->
    case do_start_cnode(Args, Opts, St) of
        {ok, Port, OsPid, Node, Out} ->
            C = #{os_pid => OsPid, node => Node, out => Out, exit => undefined},
            {reply, {ok, Port, Node}, St#st{cnodes = maps:put(Port, C, St#st.cnodes)}};
        {error, _} = Err ->
            {reply, Err, St}
    end;
handle_call({stop_cnode, Port, Sig}, _From, St) ->
    {Status, St1} = do_stop_cnode(Port, Sig, St),
    {reply, {ok, Status}, St1};
handle_call({cnode_output, Port}, _From, St) ->
    St1 = drain(St),
    #{out := Out} = maps:get(Port, St1#st.cnodes, #{out => []}),
    {reply, lists:reverse(Out), St1};
handle_call({cnode_os_pid, Port}, _From, St) ->
    #{os_pid := P} = maps:get(Port, St#st.cnodes),
    {reply, P, St};
handle_call({cnode_alive, Port}, _From, St) ->
    St1 = drain(St),
    Alive = case maps:get(Port, St1#st.cnodes, undefined) of
                #{exit := undefined, os_pid := P} -> os_pid_alive(P);
                _ -> false
            end,
    {reply, Alive, St1};
handle_call({cnode_exit, Port}, _From, St) ->
    St1 = drain(St),
    {reply, maps:get(exit, maps:get(Port, St1#st.cnodes, #{}), undefined), St1};
handle_call(stop_all, _From, St) ->
    St1 = lists:foldl(fun(P, S) -> element(2, do_stop_cnode(P, "TERM", S)) end,
                      St, maps:keys(St#st.cnodes)),
    [catch peer:stop(P) || {P, _} <- St1#st.peers],
    stop_epmd(St1),
    {reply, ok, St1#st{peers = [], cnodes = #{}, epmd_port = undefined}}.

-spec handle_cast(term(), #st{}) -> {noreply, #st{}}.
handle_cast(_, St) -> {noreply, St}.

-spec handle_info(term(), #st{}) -> {noreply, #st{}}.
handle_info(Msg, St) -> {noreply, absorb(Msg, St)}.

-spec terminate(term(), #st{}) -> ok.
terminate(_Reason, St) ->
    [kill_os_pid(P, "KILL") || #{os_pid := P} <- maps:values(St#st.cnodes)],
    [catch peer:stop(P) || {P, _} <- St#st.peers],
    stop_epmd(St),
    ok.

%%% ---------------------------------------------------------------- internals

guard() -> filename:join([root(), "scripts", "guard"]).

%% @doc A TCP port that was free a moment ago.
-spec free_port() -> inet:port_number().
free_port() ->
    {ok, L} = gen_tcp:listen(0, [{reuseaddr, true}]),
    {ok, P} = inet:port(L),
    ok = gen_tcp:close(L),
    P.

start_epmd() -> start_epmd(5).

start_epmd(0) -> {error, no_epmd};
start_epmd(N) ->
    Tcp = free_port(),
    Epmd = os:find_executable("epmd"),
    Port = open_port({spawn_executable, guard()},
                     [{args, [Epmd, "-port", integer_to_list(Tcp)]}, {line, 1024},
                      stderr_to_stdout, exit_status]),
    {ok, OsPid} = read_guard_pid(Port),
    case wait_until(fun() -> tcp_open(Tcp) end, 3000) of
        true -> {ok, Port, OsPid, Tcp};
        false -> kill_os_pid(OsPid, "KILL"), catch port_close(Port), start_epmd(N - 1)
    end.

tcp_open(Tcp) ->
    case gen_tcp:connect({127, 0, 0, 1}, Tcp, [], 200) of
        {ok, S} -> gen_tcp:close(S), true;
        _ -> false
    end.

stop_epmd(#st{epmd_os_pid = undefined}) -> ok;
stop_epmd(#st{epmd_port = Port, epmd_os_pid = OsPid}) ->
    %% epmd keeps no state worth a graceful stop.
    kill_os_pid(OsPid, "KILL"),
    catch port_close(Port),
    ok.

read_guard_pid(Port) ->
    receive
        {Port, {data, {eol, "GUARD_PID " ++ P}}} -> {ok, list_to_integer(P)}
    after 5000 -> {error, no_guard_pid}
    end.

kill_os_pid(undefined, _) -> ok;
kill_os_pid(OsPid, Sig) ->
    _ = os:cmd("kill -" ++ Sig ++ " " ++ integer_to_list(OsPid) ++ " 2>/dev/null"),
    ok.

do_start_node(Opts, St) ->
    Name = case maps:get(exact_name, Opts, false) of
               true -> maps:get(name, Opts);
               false -> unique_name(maps:get(name, Opts, "n"))
           end,
    Long = maps:get(longnames, Opts, false),
    Cookie = maps:get(cookie, Opts, St#st.cookie),
    Paths = code_paths(),
    Extra = maps:get(args, Opts, []),
    %% Nodes do not form a full mesh unless a test asks for it (-connect_all true).
    ConnectAll = case lists:member("-connect_all", Extra) of
                     true -> [];
                     false -> ["-connect_all", "false"]
                 end,
    Args = ["-setcookie", Cookie | ConnectAll] ++ lists:append([["-pa", P] || P <- Paths]) ++ Extra,
    Env = [{"ERL_EPMD_PORT", integer_to_list(St#st.epmd_tcp)} | maps:get(env, Opts, [])],
    PeerOpts0 = #{name => Name, longnames => Long, connection => standard_io,
                  args => Args, env => Env, wait_boot => 30000},
    PeerOpts = case {Long, maps:get(host, Opts, undefined)} of
                   {_, undefined} when Long -> PeerOpts0#{host => "127.0.0.1"};
                   {_, undefined} -> PeerOpts0;
                   {_, Host} -> PeerOpts0#{host => Host}
               end,
    case peer:start(maps:merge(PeerOpts, maps:with([exec], Opts))) of
        {ok, Peer, Node} -> {ok, Peer, Node};
        {error, _} = E -> E
    end.

%% The directories this VM loads the test modules and the application from
%% (build/itest and erlang_side/ebin, or the build-otpN/ ones scripts/test-otp
%% gives a runner inside an OTP chroot), so that peers run the same code.
code_paths() ->
    [filename:dirname(code:which(M)) || M <- [?MODULE, cnode_bridge]].

do_start_cnode(Args, Opts, St) ->
    Exe = maps:get(exe, Opts, filename:join([root(), "erlang_side", "priv", "cnode"])),
    Env = [{"ERL_EPMD_PORT", integer_to_list(St#st.epmd_tcp)} | maps:get(env, Opts, [])],
    Port = open_port({spawn_executable, guard()},
                     [{args, [Exe | Args]}, {env, Env}, {line, 4096},
                      stderr_to_stdout, exit_status, binary]),
    case read_guard_pid_bin(Port) of
        {ok, OsPid} ->
            case maps:get(wait_ready, Opts, true) of
                false -> {ok, Port, OsPid, undefined, []};
                true ->
                    case wait_ready(Port, maps:get(timeout, Opts, 15000), []) of
                        {ok, Node, Out} -> {ok, Port, OsPid, Node, Out};
                        {error, R, Out} ->
                            kill_os_pid(OsPid, "KILL"),
                            catch port_close(Port),
                            {error, {R, lists:reverse(Out)}}
                    end
            end;
        Err -> Err
    end.

read_guard_pid_bin(Port) ->
    receive
        {Port, {data, {eol, <<"GUARD_PID ", P/binary>>}}} -> {ok, binary_to_integer(P)}
    after 5000 -> {error, no_guard_pid}
    end.

wait_ready(Port, Timeout, Acc) ->
    receive
        {Port, {data, {eol, <<"READY ", Node/binary>> = L}}} ->
            {ok, binary_to_atom(Node, utf8), [L | Acc]};
        {Port, {data, {_, L}}} ->
            wait_ready(Port, Timeout, [L | Acc]);
        {Port, {exit_status, S}} ->
            {error, {exited, S}, Acc}
    after Timeout ->
            {error, timeout, Acc}
    end.

do_stop_cnode(Port, Sig, St) ->
    case maps:get(Port, St#st.cnodes, undefined) of
        undefined -> {undefined, St};
        #{os_pid := OsPid} ->
            kill_os_pid(OsPid, Sig),
            _ = wait_until(fun() -> not os_pid_alive(OsPid) end, 5000)
                orelse kill_os_pid(OsPid, "KILL"),
            St1 = wait_exit_status(Port, St, 2000),
            C = maps:get(Port, St1#st.cnodes),
            catch port_close(Port),
            {maps:get(exit, C), St1}
    end.

wait_exit_status(Port, St, Timeout) ->
    case maps:get(Port, St#st.cnodes) of
        #{exit := undefined} ->
            receive
                {Port, _} = M -> wait_exit_status(Port, absorb(M, St), Timeout)
            after Timeout -> St
            end;
        _ -> St
    end.

drain(St) ->
    receive
        {P, _} = M when is_port(P) -> drain(absorb(M, St))
    after 0 -> St
    end.

absorb({Port, {data, {_, L}}}, St) when is_port(Port) ->
    update_cnode(Port, fun(C = #{out := O}) -> C#{out := [L | O]} end, St);
absorb({Port, {exit_status, S}}, St) when is_port(Port) ->
    update_cnode(Port, fun(C) -> C#{exit := S} end, St);
absorb(_, St) -> St.

update_cnode(Port, F, St) ->
    case maps:get(Port, St#st.cnodes, undefined) of
        undefined -> St;
        C -> St#st{cnodes = maps:put(Port, F(C), St#st.cnodes)}
    end.
