%% @doc Public entry points of the cnode_bridge application: start and stop
%% supervised C nodes (the `cnode' program in priv/), and where things live.
%%
%% A C node started here runs under `cnode_bridge_sup' as a transient child:
%% if the program dies, it is restarted with exponential back-off (0.1 s
%% doubling to 5 s, counted over the last minute) within the supervisor's
%% intensity (10 restarts in 60 s), and the dead node's `:global' names are
%% gone before the new one starts. It exits when this BEAM node goes (it reads
%% EOF on its stdin). C nodes to start at boot are listed in the application
%% environment: `{cnode_bridge, [{cnodes, [{Name, Opts}]}]}'.
-module(cnode_bridge).

-export([start_cnode/2, stop_cnode/1, which_cnodes/0, os_pid/1, priv_dir/0,
         cnode_executable/0, start_link/3]).

-type opts() :: #{longnames => boolean(),
                  host => string() | binary(),
                  cookie => atom() | string() | binary(),
                  connect => [node() | string() | binary()],
                  port => 0..65535,
                  listen => inet:ip_address() | string() | binary(),
                  no_epmd => boolean(),
                  ipv6 => boolean(),
                  ticktime => pos_integer(),
                  setuptime => pos_integer(),
                  max_message => pos_integer(),
                  log_level => error | warning | info | debug,
                  threads => pos_integer(),
                  max_links_per_peer => pos_integer(),
                  demo => boolean(),
                  visible => boolean(),
                  pg_scopes => [atom()],
                  tls => cnode_bridge_tls:tls(),
                  executable => file:filename() | binary(),
                  ready_timeout => pos_integer()}.
-export_type([opts/0]).

%% @doc Starts the C node `Name@Host' (Host: this node's host unless given)
%% with the `cnode' flags that Opts names (see opts()). Opts is a map or a
%% keyword list; Name and the strings among the options (`host', `cookie',
%% `executable', `listen', the nodes of `connect', the files of `tls') may be
%% charlists or binaries (cnode_bridge_opts). The cookie defaults to this
%% node's and is passed in the program's environment (never its command
%% line); `listen' (an IP address, as inet_dist_use_interface) binds its
%% distribution port to that one interface; `connect' defaults to [node()];
%% `tls' (`false', or #{cert, key, cacert, verify, versions}) defaults to the
%% settings of this node's own TLS distribution (-proto_dist inet_tls with
%% -ssl_dist_optfile or -ssl_dist_opt), plain TCP when it has none.
%%
%% Returns once the node printed READY and is connected: {ok, CNode}, or
%% {error, Reason} with nothing left running:
%% <ul>
%% <li>`not_distributed': this node is not alive (started without -sname or
%%     -name, or net_kernel not started);</li>
%% <li>`{bad_option, {Key, Value}}' (`{bad_option, Opts}' for Opts neither a
%%     map nor a keyword list);</li>
%% <li>`{already_started, CNode}';</li>
%% <li>`{cnode_exited, Status, Lines}': the program exited before READY;
%%     Lines are its last output lines (stdout and stderr, at most 10, as
%%     binaries), which say why, e.g. `<<"cnode: cannot start: already
%%     exists">>' when the name is taken in epmd;</li>
%% <li>`{ready_timeout, Lines}': no READY within `ready_timeout' ms (15000);</li>
%% <li>`{executable, File, Posix}': the program could not be run.</li>
%% </ul>
%% The program's log lines go to `logger' at their own level, its fatal
%% lines (`cnode: ...') at level error.
-spec start_cnode(atom() | string() | binary(), opts() | [{atom(), term()}]) ->
          {ok, node()} | {error, term()}.
start_cnode(Name0, Opts0) ->
    case is_alive() of
        false -> {error, not_distributed};
        true ->
            case cnode_bridge_opts:normalize(Name0, Opts0) of
                {ok, Name, Opts} -> start_child(Name, Opts);
                {error, _} = E -> E
            end
    end.

start_child(Name, Opts) ->
    case cnode_bridge_cnode:args(Name, Opts) of
        {error, _} = E -> E;
        {ok, _} ->
            Node = cnode_bridge_cnode:node_name(Name, Opts),
            Spec = #{id => {cnode, Node},
                     start => {cnode_bridge_cnode, start_link, [Name, Opts]},
                     restart => transient,
                     shutdown => 10000,
                     type => worker,
                     modules => [cnode_bridge_cnode]},
            case supervisor:start_child(cnode_bridge_sup, Spec) of
                {ok, _} -> {ok, Node};
                {error, {already_started, _}} -> {error, {already_started, Node}};
                {error, already_present} -> {error, {already_started, Node}};
                %% supervisor:start_child/2 adds the child to the reason.
                {error, {Reason, _Child}} -> {error, Reason};
                {error, _} = E -> E
            end
    end.

%% @doc Starts a C worker of a type registered on CNode, linked to the caller,
%% once its init has run: a supervisor's start function (see cnode_worker).
-spec start_link(node(), atom(), list()) -> {ok, pid()} | {error, term()}.
start_link(CNode, Type, Args) ->
    cnode_worker:start_link(CNode, Type, Args).

%% @doc Stops a supervised C node cleanly (its workers' terminate callbacks run
%% and their links and monitors fire with `shutdown').
-spec stop_cnode(node()) -> ok | {error, not_found}.
stop_cnode(Node) ->
    case supervisor:terminate_child(cnode_bridge_sup, {cnode, Node}) of
        ok -> _ = supervisor:delete_child(cnode_bridge_sup, {cnode, Node}), ok;
        {error, not_found} -> {error, not_found}
    end.

%% @doc The supervised C nodes and their controlling processes.
-spec which_cnodes() -> [{node(), pid() | restarting | undefined}].
which_cnodes() ->
    [{N, P} || {{cnode, N}, P, _, _} <- supervisor:which_children(cnode_bridge_sup)].

%% @doc The OS pid of a supervised C node's program.
-spec os_pid(node()) -> integer() | undefined.
os_pid(Node) ->
    case lists:keyfind(Node, 1, which_cnodes()) of
        {_, P} when is_pid(P) ->
            %% The controller may be dying (the node just crashed): no pid yet.
            try gen_server:call(P, os_pid, 20000)
            catch exit:_ -> undefined
            end;
        _ -> undefined
    end.

%% @doc The application's priv directory (holds the `cnode' program and the NIF).
-spec priv_dir() -> file:filename().
priv_dir() ->
    case code:priv_dir(cnode_bridge) of
        {error, bad_name} ->
            %% Not installed as an application (e.g. -pa erlang_side/ebin).
            filename:join(filename:dirname(filename:dirname(code:which(?MODULE))), "priv");
        Dir ->
            Dir
    end.

%% @doc Full path of the `cnode' program.
-spec cnode_executable() -> file:filename().
cnode_executable() ->
    filename:join(priv_dir(), "cnode").
