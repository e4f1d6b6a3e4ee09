%% @doc The process behind a `cnode_bridge_test' context (see that module for the
%% API): it owns the private epmd, the BEAM peer nodes and the C node programs
%% of one test, and it is their watchdog. It monitors the test process that
%% made it and stops everything when that process ends, however it ends; peers
%% are linked to it (a peer halts when its control connection closes); every OS
%% process runs under a small guard shell that kills it when the port to this
%% VM closes, so even a killed context or a crashed VM leaves nothing running.
%% @end
-module(cnode_bridge_test_ctx).
-behaviour(gen_server).

-export([start/2, guard_port/3, os_pid_alive/1, kill_os_pid/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-record(cn, {os_pid :: integer(),
             name :: string(),
             node :: node() | undefined,
             out = [] :: [binary()],
             exit :: undefined | integer(),
             reaped = false :: boolean(),
             log :: undefined | file:io_device()}).

-record(st, {owner :: undefined | reference(),
             epmd_port :: undefined | port(),
             epmd_os_pid :: undefined | integer(),
             epmd_tcp :: inet:port_number(),
             cookie :: string(),
             log_dir :: undefined | file:filename(),
             logs = [] :: [{string(), file:filename()}],
             peers = [] :: [{pid(), node()}],
             cnodes = #{} :: #{port() => #cn{}}}).

%% The guard: runs the command ($2...) as its child, prints "GUARD_PID <pid>",
%% and when its own stdin (the port from this VM) reaches EOF kills the child:
%% in `pipe' mode the child reads that same stdin and gets 2 s to exit by
%% itself on EOF first; then SIGTERM, and SIGKILL 2 s later. The watcher reads
%% with the shell's own `read' and has no stdout, so the port sees EOF as soon
%% as the child exits.
-define(GUARD,
        "mode=$1; shift\n"
        "exec 3<&0\n"
        "if [ \"$mode\" = pipe ]; then \"$@\" <&3 3<&- & else \"$@\" </dev/null 3<&- & fi\n"
        "child=$!\n"
        "echo \"GUARD_PID $child\"\n"
        "grace() { n=0; while kill -0 \"$child\" 2>/dev/null && [ $n -lt 20 ]; do"
        " sleep 0.1; n=$((n + 1)); done; }\n"
        "( while read -r _; do :; done\n"
        "  [ \"$mode\" = pipe ] && grace\n"
        "  kill -TERM \"$child\" 2>/dev/null; grace; kill -KILL \"$child\" 2>/dev/null"
        " ) <&3 >/dev/null 2>&1 &\n"
        "watcher=$!\n"
        "wait \"$child\"\n"
        "rc=$?\n"
        "kill \"$watcher\" 2>/dev/null\n"
        "exit $rc\n").

%%% ---------------------------------------------------------------- API

%% @doc Starts a context for Owner (a pid, or `none' for one that lives until
%% stopped); Opts as cnode_bridge_test:new/1.
-spec start(pid() | none, map()) -> {ok, pid()} | {error, term()}.
start(Owner, Opts) ->
    gen_server:start(?MODULE, {Owner, Opts}, []).

%% @doc Opens a port running Exe with Args under the guard (Stdin: `pipe', the
%% program's stdin is the port and EOF means this VM let go of it; `null':
%% /dev/null) and returns it with the program's OS pid.
-spec guard_port(pipe | null, file:filename(), [term()]) ->
          {ok, port(), integer()} | {error, term()}.
guard_port(Stdin, Exe, PortOpts) ->
    {Args, Rest} = case lists:keytake(args, 1, PortOpts) of
                       {value, {args, A}, R} -> {A, R};
                       false -> {[], PortOpts}
                   end,
    Port = open_port({spawn_executable, "/bin/sh"},
                     [{args, ["-c", ?GUARD, "cnb_guard", atom_to_list(Stdin), Exe | Args]},
                      {line, 4096}, binary, stderr_to_stdout, exit_status | Rest]),
    receive
        {Port, {data, {eol, <<"GUARD_PID ", P/binary>>}}} -> {ok, Port, binary_to_integer(P)};
        {Port, {exit_status, S}} -> {error, {exited, S}}
    after 10000 ->
            close_port(Port),
            {error, no_guard_pid}
    end.

-spec os_pid_alive(integer()) -> boolean().
os_pid_alive(OsPid) ->
    case file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/stat") of
        {ok, Stat} ->
            [_, Rest] = binary:split(Stat, <<") ">>),
            binary:first(Rest) =/= $Z;
        _ -> false
    end.

-spec kill_os_pid(integer() | undefined, string()) -> ok.
kill_os_pid(undefined, _) -> ok;
kill_os_pid(OsPid, Sig) ->
    _ = os:cmd("kill -" ++ Sig ++ " " ++ integer_to_list(OsPid) ++ " 2>/dev/null"),
    ok.

%%% ---------------------------------------------------------------- server

-spec init({pid() | none, map()}) -> {ok, #st{}} | {stop, term()}.
init({Owner, Opts}) ->
    process_flag(trap_exit, true),
    Ref = case Owner of
              none -> undefined;
              _ -> erlang:monitor(process, Owner)
          end,
    LogDir = maps:get(log_dir, Opts, undefined),
    _ = LogDir =:= undefined orelse filelib:ensure_dir(filename:join(LogDir, "x")),
    St = #st{owner = Ref, cookie = maps:get(cookie, Opts), log_dir = LogDir, epmd_tcp = 0},
    case maps:get(epmd, Opts) of
        private ->
            case start_epmd(5) of
                {ok, Port, OsPid, Tcp} ->
                    {ok, St#st{epmd_port = Port, epmd_os_pid = OsPid, epmd_tcp = Tcp}};
                {error, R} -> {stop, R}
            end;
        Tcp when is_integer(Tcp) ->
            {ok, St#st{epmd_tcp = Tcp}}
    end.

-spec handle_call(term(), gen_server:from(), #st{}) ->
          {reply, term(), #st{}} | {stop, normal, ok, #st{}}.
handle_call(epmd_port, _From, St) -> {reply, St#st.epmd_tcp, St};
handle_call(cookie, _From, St) -> {reply, St#st.cookie, St};
handle_call(log_files, _From, St) -> {reply, lists:reverse(St#st.logs), St};
handle_call({start_node, Opts}, _From, St) ->
    case start_node(Opts, St) of
        {ok, Peer, Node, St1} ->
            {reply, {ok, Peer, Node}, St1#st{peers = [{Peer, Node} | St1#st.peers]}};
        Err -> {reply, Err, St}
    end;
handle_call({stop_node, Peer}, _From, St) ->
    stop_peer(Peer),
    {reply, ok, St#st{peers = lists:keydelete(Peer, 1, St#st.peers)}};
handle_call({start_cnode, Opts}, _From, St) ->
    {Reply, St1} = start_cnode(Opts, St),
    {reply, Reply, St1};
handle_call({stop_cnode, Port, Sig}, _From, St) ->
    {Status, St1} = stop_cnodes([Port], Sig, St),
    {reply, {ok, Status}, St1};
handle_call({cnode, Port, What}, _From, St) ->
    St1 = drain(St),
    {reply, cnode_info(What, maps:get(Port, St1#st.cnodes, undefined)), St1};
handle_call(stop_all, _From, St) ->
    {stop, normal, ok, stop_all(St)}.

-spec handle_cast(term(), #st{}) -> {noreply, #st{}}.
handle_cast(_, St) -> {noreply, St}.

-spec handle_info(term(), #st{}) -> {noreply, #st{}} | {stop, normal, #st{}}.
handle_info({'DOWN', Ref, process, _, _}, St = #st{owner = Ref}) ->
    %% The test process ended (passed, failed or crashed): clean up after it.
    {stop, normal, stop_all(St)};
handle_info({'EXIT', Peer, _}, St) when is_pid(Peer) ->
    {noreply, St#st{peers = lists:keydelete(Peer, 1, St#st.peers)}};
handle_info(Msg, St) ->
    {noreply, absorb(Msg, St)}.

-spec terminate(term(), #st{}) -> ok.
terminate(_Reason, St) ->
    _ = stop_all(St),
    ok.

%%% ---------------------------------------------------------------- epmd

start_epmd(0) -> {error, no_epmd};
start_epmd(N) ->
    Tcp = cnode_bridge_test:free_port(),
    Epmd = os:find_executable("epmd"),
    case guard_port(null, Epmd, [{args, ["-port", integer_to_list(Tcp)]}]) of
        {ok, Port, OsPid} ->
            case cnode_bridge_test:wait_until(fun() -> tcp_open(Tcp) end, 3000) of
                true -> {ok, Port, OsPid, Tcp};
                false -> kill_os_pid(OsPid, "KILL"), close_port(Port), start_epmd(N - 1)
            end;
        {error, _} -> start_epmd(N - 1)
    end.

tcp_open(Tcp) ->
    case gen_tcp:connect({127, 0, 0, 1}, Tcp, [], 200) of
        {ok, S} -> gen_tcp:close(S), true;
        _ -> false
    end.

%%% ---------------------------------------------------------------- peers

start_node(Opts, St) ->
    Name = case maps:get(exact_name, Opts, false) of
               true -> maps:get(name, Opts);
               false -> cnode_bridge_test:unique_name(maps:get(name, Opts, "n"))
           end,
    Long = maps:get(longnames, Opts, false),
    Cookie = maps:get(cookie, Opts, St#st.cookie),
    Extra = maps:get(args, Opts, []),
    %% Nodes do not form a full mesh unless asked to (-connect_all true).
    ConnectAll = case lists:member("-connect_all", Extra) of
                     true -> [];
                     false -> ["-connect_all", "false"]
                 end,
    Paths = maps:get(code_path, Opts, code_paths()),
    HostOpt = case {Long, maps:get(host, Opts, undefined)} of
                  {true, undefined} -> #{host => "127.0.0.1"};
                  {false, undefined} -> #{};
                  {_, H} -> #{host => H}
              end,
    Host = maps:get(host, HostOpt, cnode_bridge_test:hostname()),
    Node = list_to_atom(Name ++ "@" ++ Host),
    {LogArgs, St1} = peer_log(Node, St),
    Args = ["-setcookie", Cookie | ConnectAll] ++ lists:append([["-pa", P] || P <- Paths])
        ++ LogArgs ++ Extra,
    Env = [{"ERL_EPMD_PORT", integer_to_list(St#st.epmd_tcp)} | maps:get(env, Opts, [])],
    PeerOpts = HostOpt#{name => Name, longnames => Long, connection => standard_io,
                        args => Args, env => Env, wait_boot => maps:get(timeout, Opts, 30000)},
    case peer:start_link(maps:merge(PeerOpts, maps:with([exec], Opts))) of
        {ok, Peer, N} -> {ok, Peer, N, St1};
        {error, _} = E -> E
    end.

%% With a log directory, the peer's logger writes to <dir>/<node>.log.
peer_log(_Node, St = #st{log_dir = undefined}) -> {[], St};
peer_log(Node, St = #st{log_dir = Dir}) ->
    File = filename:join(Dir, atom_to_list(Node) ++ ".log"),
    Handler = [{handler, default, logger_std_h, #{config => #{file => File}}}],
    {["-kernel", "logger", lists:flatten(io_lib:format("~0p", [Handler]))],
     St#st{logs = [{atom_to_list(Node), File} | St#st.logs]}}.

%% This VM's code path outside OTP's own lib directory (the application, the
%% test modules, Elixir's and mix's libraries), so peers run the same code.
code_paths() ->
    Otp = code:lib_dir(),
    [P || P <- code:get_path(), P =/= ".", not lists:prefix(Otp, P)].

stop_peer(Peer) ->
    try peer:stop(Peer) catch exit:_ -> ok end.

%%% ---------------------------------------------------------------- C nodes

start_cnode(Opts, St) ->
    {Exe, Argv, Env, Stdin, Name} = cnode_command(Opts, St),
    case guard_port(Stdin, Exe, [{args, Argv}, {env, Env}]) of
        {error, _} = E -> {E, St};
        {ok, Port, OsPid} ->
            {Log, St1} = cnode_log(Name, St),
            C = #cn{os_pid = OsPid, name = Name, log = Log},
            St2 = St1#st{cnodes = maps:put(Port, C, St1#st.cnodes)},
            case maps:get(wait_ready, Opts, true) of
                false -> {{ok, Port, undefined}, St2};
                true -> wait_ready(Port, maps:get(timeout, Opts, 15000), St2)
            end
    end.

%% The program, its arguments, environment and stdin mode. With `argv' the
%% arguments are exactly those; else the kit names the node and adds
%% --exit-on-eof, the --connect flags and `args'; the cookie goes in CNB_COOKIE.
cnode_command(Opts, St) ->
    Exe = maps:get(exe, Opts, cnode_bridge:cnode_executable()),
    Env0 = [{"ERL_EPMD_PORT", integer_to_list(St#st.epmd_tcp)} | maps:get(env, Opts, [])],
    case maps:find(argv, Opts) of
        {ok, Argv} ->
            {Exe, Argv, Env0, null, filename:basename(Exe)};
        error ->
            Long = maps:get(longnames, Opts, false),
            Host = maps:get(host, Opts, case Long of
                                            true -> "127.0.0.1";
                                            false -> cnode_bridge_test:hostname()
                                        end),
            Name = cnode_bridge_test:unique_name(maps:get(name, Opts, "c")) ++ "@" ++ Host,
            Flag = case Long of true -> "--name"; false -> "--sname" end,
            Connect = lists:append([["--connect", to_list(N)] || N <- maps:get(connect, Opts, [])]),
            Cookie = to_list(maps:get(cookie, Opts, St#st.cookie)),
            Argv = [Flag, Name, "--exit-on-eof" | Connect] ++ maps:get(args, Opts, []),
            {Exe, Argv, [{"CNB_COOKIE", Cookie} | Env0], pipe, Name}
    end.

to_list(A) when is_atom(A) -> atom_to_list(A);
to_list(L) when is_list(L) -> L.

cnode_log(_Name, St = #st{log_dir = undefined}) -> {undefined, St};
cnode_log(Name, St = #st{log_dir = Dir}) ->
    File = unused_file(Dir, Name, 0),
    {ok, Fd} = file:open(File, [append, raw, binary]),
    {Fd, St#st{logs = [{Name, File} | St#st.logs]}}.

unused_file(Dir, Name, N) ->
    F = filename:join(Dir, case N of
                               0 -> Name ++ ".log";
                               _ -> Name ++ "-" ++ integer_to_list(N) ++ ".log"
                           end),
    case filelib:is_file(F) of
        true -> unused_file(Dir, Name, N + 1);
        false -> F
    end.

wait_ready(Port, Timeout, St) ->
    Deadline = erlang:monotonic_time(millisecond) + Timeout,
    wait_ready_(Port, Deadline, St).

wait_ready_(Port, Deadline, St) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    receive
        {Port, {data, {eol, <<"READY ", Node/binary>>}}} = M ->
            St1 = absorb(M, St),
            N = binary_to_atom(Node, utf8),
            C = maps:get(Port, St1#st.cnodes),
            {{ok, Port, N}, St1#st{cnodes = maps:put(Port, C#cn{node = N}, St1#st.cnodes)}};
        {Port, {exit_status, S}} = M ->
            failed(Port, {exited, S}, absorb(M, St));
        {Port, _} = M ->
            wait_ready_(Port, Deadline, absorb(M, St))
    after Left ->
            failed(Port, timeout, St)
    end.

%% A C node that never got ready: stopped, its output in the error.
failed(Port, Why, St) ->
    #cn{out = Out} = maps:get(Port, St#st.cnodes),
    {_, St1} = stop_cnodes([Port], "KILL", St),
    {{error, {Why, lists:reverse(Out)}}, St1}.

%% Signals every listed C node, waits up to 5 s for each to go (then SIGKILL),
%% collects its exit status and closes its port and log (its output stays
%% readable). Returns the last one's status.
stop_cnodes(Ports, Sig, St) ->
    Live = fun(P) -> case maps:get(P, St#st.cnodes, undefined) of
                         #cn{reaped = false} -> true;
                         _ -> false
                     end
           end,
    Known = lists:filter(Live, Ports),
    %% (One that exited by itself is not signalled: its pid may be reused.)
    [kill_os_pid(OsPid, Sig)
     || P <- Known, #cn{os_pid = OsPid, exit = undefined} <- [maps:get(P, St#st.cnodes)]],
    lists:foldl(fun(P, {_, S}) -> reap(P, S) end, {undefined, St}, Known).

reap(Port, St) ->
    #cn{os_pid = OsPid, exit = Exit} = maps:get(Port, St#st.cnodes),
    _ = Exit =/= undefined orelse
        cnode_bridge_test:wait_until(fun() -> not os_pid_alive(OsPid) end, 5000) orelse
        kill_os_pid(OsPid, "KILL"),
    St1 = wait_exit_status(Port, St, 2000),
    C = #cn{exit = Status} = maps:get(Port, St1#st.cnodes),
    close_port(Port),
    _ = C#cn.log =:= undefined orelse file:close(C#cn.log),
    {Status, St1#st{cnodes = maps:put(Port, C#cn{reaped = true, log = undefined}, St1#st.cnodes)}}.

wait_exit_status(Port, St, Timeout) ->
    case maps:get(Port, St#st.cnodes) of
        #cn{exit = undefined} ->
            receive
                {Port, _} = M -> wait_exit_status(Port, absorb(M, St), Timeout)
            after Timeout -> St
            end;
        _ -> St
    end.

cnode_info(_, undefined) -> undefined;
cnode_info(output, #cn{out = Out}) -> lists:reverse(Out);
cnode_info(os_pid, #cn{os_pid = P}) -> P;
cnode_info(node, #cn{node = N}) -> N;
cnode_info(exit, #cn{exit = E}) -> E;
cnode_info(alive, #cn{exit = undefined, reaped = false, os_pid = P}) -> os_pid_alive(P);
cnode_info(alive, #cn{}) -> false.

drain(St) ->
    receive
        {P, _} = M when is_port(P) -> drain(absorb(M, St))
    after 0 -> St
    end.

absorb({Port, {data, {Eol, L}}}, St) when is_port(Port) ->
    update(Port, fun(C = #cn{out = O, log = Log}) ->
                         _ = Log =:= undefined orelse
                             file:write(Log, [L, case Eol of eol -> "\n"; noeol -> "" end]),
                         C#cn{out = [L | O]}
                 end, St);
absorb({Port, {exit_status, S}}, St) when is_port(Port) ->
    update(Port, fun(C) -> C#cn{exit = S} end, St);
absorb(_, St) -> St.

update(Port, F, St) ->
    case maps:get(Port, St#st.cnodes, undefined) of
        undefined -> St;
        C -> St#st{cnodes = maps:put(Port, F(C), St#st.cnodes)}
    end.

%%% ---------------------------------------------------------------- clean-up

stop_all(St) ->
    {_, St1} = stop_cnodes(maps:keys(St#st.cnodes), "TERM", St),
    [stop_peer(P) || {P, _} <- St1#st.peers],
    case St1#st.epmd_os_pid of
        undefined -> ok;
        OsPid ->
            %% epmd keeps no state worth a graceful stop.
            kill_os_pid(OsPid, "KILL"),
            close_port(St1#st.epmd_port)
    end,
    St1#st{peers = [], cnodes = #{}, epmd_port = undefined, epmd_os_pid = undefined}.

close_port(Port) ->
    try port_close(Port) catch error:badarg -> true end.
