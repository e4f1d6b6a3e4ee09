%% @doc One supervised C node: owns the port of the `cnode' program, passes the
%% cookie in its environment (CNB_COOKIE, which only this user can read in
%% /proc and the program wipes at start; never the command line), waits for its
%% `READY <node>' line, forwards its log lines to `logger' (metadata
%% `#{cnode => Node}'), and when the program dies unexpectedly makes sure no
%% `:global' name of the dead node is left before exiting, so the supervisor
%% restarts it (with exponential back-off, see init/1). The program gets
%% `--exit-on-eof', so it never outlives this BEAM node.
-module(cnode_bridge_cnode).
-behaviour(gen_server).

-export([start_link/2, args/2, node_name/2]).
-export([init/1, handle_continue/2, handle_call/3, handle_cast/2, handle_info/2,
         terminate/2]).

-include_lib("kernel/include/logger.hrl").

-define(BACKOFF_MIN, 100).
-define(BACKOFF_MAX, 5000).
-define(RESTART_WINDOW, 60000).
-define(LAST_LINES, 10).

-record(st, {name :: atom(),
             opts :: map(),
             node :: node(),
             port :: undefined | port(),
             os_pid :: undefined | integer(),
             stopping = false :: boolean()}).

%% @doc Starts the C node Name (its alive part) with Opts; returns once it is
%% ready (first start) or at once (a restart, which waits out its back-off).
-spec start_link(atom(), map()) -> {ok, pid()} | {error, term()}.
start_link(Name, Opts) ->
    gen_server:start_link(?MODULE, {Name, Opts}, []).

%% @doc The full node name the C node will have.
-spec node_name(atom(), map()) -> node().
node_name(Name, Opts) ->
    Host = case maps:find(host, Opts) of
               {ok, H} -> H;
               error -> host_of(node(), maps:get(longnames, Opts, longnames()))
           end,
    list_to_atom(atom_to_list(Name) ++ "@" ++ Host).

longnames() ->
    net_kernel:longnames() =:= true.

host_of(Node, Long) ->
    case string:split(atom_to_list(Node), "@") of
        [_, H] -> H;
        _ ->
            {ok, H} = inet:gethostname(),
            case Long of
                true -> H;
                false -> hd(string:split(H, "."))
            end
    end.

%% @doc The command-line arguments for Opts (validated). The cookie is not
%% among them: it goes in the environment. Returns {error, {bad_option, Opt}}
%% for an unknown or ill-typed option.
-spec args(atom(), map()) -> {ok, [string()]} | {error, term()}.
args(Name, Opts) when is_atom(Name), is_map(Opts) ->
    try
        NameFlag = case maps:get(longnames, Opts, longnames()) of
                       true -> "--name";
                       false -> "--sname"
                   end,
        Base = [NameFlag, atom_to_list(node_name(Name, Opts)), "--exit-on-eof"],
        {ok, Base ++ lists:append([opt_args(K, V) || {K, V} <- lists:sort(maps:to_list(Opts))])}
    catch
        throw:{bad_option, _} = Bad -> {error, Bad}
    end;
args(Name, Opts) ->
    {error, {bad_option, {Name, Opts}}}.

opt_args(longnames, B) when is_boolean(B) -> [];
opt_args(host, H) when is_list(H) -> [];
opt_args(cookie, C) when is_atom(C); is_list(C) -> [];
opt_args(connect, Ns) when is_list(Ns) ->
    lists:append([["--connect", to_list(N)] || N <- Ns]);
opt_args(port, P) when is_integer(P), P >= 0, P < 65536 -> ["--port", integer_to_list(P)];
opt_args(listen, A) when is_tuple(A) ->
    %% An IP address tuple, as kernel's inet_dist_use_interface.
    case inet:ntoa(A) of
        {error, _} -> throw({bad_option, {listen, A}});
        Text -> ["--listen", Text]
    end;
opt_args(listen, A) when is_list(A) ->
    case inet:parse_strict_address(A) of
        {ok, _} -> ["--listen", A];
        {error, _} -> throw({bad_option, {listen, A}})
    end;
opt_args(no_epmd, true) -> ["--no-epmd"];
opt_args(no_epmd, false) -> [];
opt_args(ipv6, true) -> ["--ipv6"];
opt_args(ipv6, false) -> [];
opt_args(ticktime, S) when is_integer(S), S > 0 -> ["--ticktime", integer_to_list(S)];
opt_args(setuptime, S) when is_integer(S), S > 0 -> ["--setuptime", integer_to_list(S)];
opt_args(max_message, B) when is_integer(B), B >= 1024 -> ["--max-message", integer_to_list(B)];
opt_args(log_level, L) when L =:= error; L =:= warning; L =:= info; L =:= debug ->
    ["--log-level", atom_to_list(L)];
opt_args(threads, N) when is_integer(N), N > 0 -> ["--threads", integer_to_list(N)];
opt_args(max_links_per_peer, N) when is_integer(N), N > 0 ->
    ["--max-links-per-peer", integer_to_list(N)];
opt_args(tls, T) -> cnode_bridge_tls:args(T);
opt_args(demo, true) -> ["--demo"];
opt_args(demo, false) -> [];
opt_args(visible, true) -> ["--visible"];
opt_args(visible, false) -> [];
opt_args(pg_scopes, [_ | _] = Ss) ->
    case lists:all(fun is_atom/1, Ss) of
        true -> ["--pg-scopes", lists:flatten(lists:join(",", [atom_to_list(S) || S <- Ss]))];
        false -> throw({bad_option, {pg_scopes, Ss}})
    end;
opt_args(executable, E) when is_list(E) -> [];
opt_args(ready_timeout, T) when is_integer(T), T > 0 -> [];
opt_args(K, V) -> throw({bad_option, {K, V}}).

to_list(A) when is_atom(A) -> atom_to_list(A);
to_list(L) when is_list(L) -> L.

%%% ------------------------------------------------------------------ server

-spec init({atom(), map()}) -> {ok, #st{}} | {ok, #st{}, {continue, restart}} | {stop, term()}.
init({Name, Opts0}) ->
    process_flag(trap_exit, true),
    %% TLS: by default as this node's own distribution runs.
    Opts = maps:merge(#{connect => [node()], tls => cnode_bridge_tls:from_node()}, Opts0),
    St = #st{name = Name, opts = Opts, node = node_name(Name, Opts)},
    case restarts(Name) of
        [] ->
            %% First start: the caller waits until the node is ready.
            note_start(Name),
            case launch(St) of
                {ok, St1} -> {ok, St1};
                {error, R} -> {stop, R}
            end;
        _ ->
            {ok, St, {continue, restart}}
    end.

-spec handle_continue(restart, #st{}) -> {noreply, #st{}} | {stop, term(), #st{}}.
handle_continue(restart, St = #st{name = Name}) ->
    Delay = backoff(Name),
    ?LOG_WARNING("restarting C node ~ts in ~b ms", [St#st.node, Delay],
                 #{cnode => St#st.node}),
    timer:sleep(Delay),
    note_start(Name),
    case launch(St) of
        {ok, St1} -> {noreply, St1};
        {error, R} -> {stop, R, St}
    end.

-spec handle_call(term(), gen_server:from(), #st{}) -> {reply, term(), #st{}}.
handle_call(node, _From, St) -> {reply, St#st.node, St};
handle_call(os_pid, _From, St) -> {reply, St#st.os_pid, St};
handle_call(_, _From, St) -> {reply, {error, unknown_call}, St}.

-spec handle_cast(term(), #st{}) -> {noreply, #st{}}.
handle_cast(_, St) -> {noreply, St}.

-spec handle_info(term(), #st{}) -> {noreply, #st{}} | {stop, term(), #st{}}.
handle_info({Port, {data, {_, Line}}}, St = #st{port = Port}) ->
    log_line(St#st.node, Line),
    {noreply, St};
handle_info({Port, {exit_status, S}}, St = #st{port = Port}) ->
    ?LOG_ERROR("C node ~ts exited with status ~b", [St#st.node, S], #{cnode => St#st.node}),
    St1 = St#st{port = undefined},
    forget_names(St1#st.node),
    {stop, {cnode_exited, S}, St1};
handle_info({'EXIT', Port, _}, St = #st{port = Port}) ->
    {noreply, St};
handle_info(_, St) ->
    {noreply, St}.

-spec terminate(term(), #st{}) -> ok.
terminate(Reason, St = #st{port = Port}) when is_port(Port) ->
    %% Closing stdin makes the program shut down cleanly (--exit-on-eof).
    close_port(Port),
    wait_os_exit(St#st.os_pid, 5000),
    case Reason of
        shutdown -> clear_restarts(St#st.name);
        normal -> clear_restarts(St#st.name);
        _ -> ok
    end,
    ok;
terminate(_, _) ->
    ok.

%%% ------------------------------------------------------------------ internals

launch(St = #st{name = Name, opts = Opts, node = Node}) ->
    case open(args(Name, Opts), Opts) of
        {error, _} = E -> E;
        {ok, Port, OsPid} ->
            case wait_ready(Port, Node, maps:get(ready_timeout, Opts, 15000), []) of
                ok ->
                    _ = net_kernel:connect_node(Node),
                    ?LOG_INFO("C node ~ts ready (os pid ~b)", [Node, OsPid], #{cnode => Node}),
                    {ok, St#st{port = Port, os_pid = OsPid}};
                {error, Why} ->
                    close_port(Port),
                    _ = os:cmd("kill -9 " ++ integer_to_list(OsPid)),
                    ?LOG_ERROR("C node ~ts did not start: ~tp", [Node, Why], #{cnode => Node}),
                    {error, Why}
            end
    end.

%% The program's port; {error, {executable, Exe, Posix}} if it cannot run.
open({error, _} = E, _) ->
    E;
open({ok, Args}, Opts) ->
    Exe = maps:get(executable, Opts, cnode_bridge:cnode_executable()),
    Cookie = to_list(maps:get(cookie, Opts, erlang:get_cookie())),
    try open_port({spawn_executable, Exe},
                  [{args, Args}, {env, [{"CNB_COOKIE", Cookie}]},
                   {line, 8192}, binary, exit_status, stderr_to_stdout]) of
        Port ->
            {os_pid, OsPid} = erlang:port_info(Port, os_pid),
            {ok, Port, OsPid}
    catch
        error:Posix -> {error, {executable, Exe, Posix}}
    end.

%% Waits for READY; the last ?LAST_LINES output lines go with a failure.
wait_ready(Port, Node, Timeout, Last) ->
    receive
        {Port, {data, {eol, <<"READY ", _/binary>>}}} -> ok;
        {Port, {data, {_, Line}}} ->
            log_line(Node, Line),
            wait_ready(Port, Node, Timeout, lists:sublist([Line | Last], ?LAST_LINES));
        {Port, {exit_status, S}} -> {error, {cnode_exited, S, lists:reverse(Last)}}
    after Timeout ->
            {error, {ready_timeout, lists:reverse(Last)}}
    end.

%% "2026-...Z [level] node: message" -> logger at that level; the program's
%% fatal lines ("cnode: cannot start: ...") at level error, others at info.
log_line(Node, Line) ->
    Meta = #{cnode => Node, domain => [cnode_bridge]},
    case re:run(Line, "^\\S+ \\[(error|warning|info|debug)\\] [^:]+: (.*)$",
                [{capture, all_but_first, binary}]) of
        {match, [Level, Msg]} ->
            logger:log(binary_to_atom(Level, utf8), "~ts", [Msg], Meta);
        nomatch ->
            Level = case Line of
                        <<"cnode: ", _/binary>> -> error;
                        _ -> info
                    end,
            logger:log(Level, "~ts", [Line], Meta)
    end.

%% After a crash: the dead node's :global names go when every node's
%% global_name_server sees the connection drop; wait for that here, and
%% remove any left after 5 s, so the restarted node starts clean.
forget_names(Node) ->
    Deadline = erlang:monotonic_time(millisecond) + 5000,
    forget_names(Node, Deadline).

forget_names(Node, Deadline) ->
    Left = [N || N <- global:registered_names(),
                 case global:whereis_name(N) of
                     P when is_pid(P) -> node(P) =:= Node;
                     _ -> false
                 end],
    case Left of
        [] -> ok;
        _ ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> lists:foreach(fun global:unregister_name/1, Left);
                false -> timer:sleep(10), forget_names(Node, Deadline)
            end
    end.

wait_os_exit(undefined, _) -> ok;
wait_os_exit(OsPid, Ms) when Ms =< 0 ->
    _ = os:cmd("kill -9 " ++ integer_to_list(OsPid)),
    ok;
wait_os_exit(OsPid, Ms) ->
    case filelib:is_dir("/proc/" ++ integer_to_list(OsPid)) of
        false -> ok;
        true -> timer:sleep(20), wait_os_exit(OsPid, Ms - 20)
    end.

%% Restart history per C node name, for the back-off: kept in persistent_term
%% (it survives this process, which the supervisor replaces).
restarts(Name) ->
    Now = erlang:monotonic_time(millisecond),
    [T || T <- persistent_term:get({?MODULE, Name}, []), Now - T < ?RESTART_WINDOW].

note_start(Name) ->
    persistent_term:put({?MODULE, Name}, [erlang:monotonic_time(millisecond) | restarts(Name)]).

clear_restarts(Name) ->
    _ = persistent_term:erase({?MODULE, Name}),
    ok.

backoff(Name) ->
    K = length(restarts(Name)),
    min(?BACKOFF_MAX, ?BACKOFF_MIN bsl max(0, K - 1)).

%% port_close/1 on a port that may have closed already. (Not `catch Expr':
%% OTP 29 deprecates it, and warnings are errors here.)
close_port(Port) ->
    try port_close(Port) catch error:badarg -> true end.
