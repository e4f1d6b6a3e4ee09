%% @doc A test kit for mixed-language integration tests (Common Test, EUnit,
%% ExUnit): a private epmd on a port of its own, BEAM peer nodes (OTP `peer')
%% and C nodes (the `cnode' program, or your own binary with its arguments and
%% environment), each waited for until it is ready, each one's log captured,
%% and all of it stopped by OS pid when the test ends -- also when it crashes.
%%
%% A context (`new/1') belongs to the process that made it, normally the test
%% process: when that process ends, however it ends, the context stops every
%% node and program it started. Each OS process runs under a guard that kills
%% it when the context's port closes, so a killed context or a crashed VM leaves
%% nothing running either.
%%
%% Common Test (one context per test case; the example suite is
%% `examples/ct/cnode_bridge_example_SUITE.erl'):
%% ```
%% init_per_testcase(TC, Config) ->
%%     Dir = filename:join(?config(priv_dir, Config), TC),
%%     [{ctx, cnode_bridge_test:new(#{log_dir => Dir})} | Config].
%% end_per_testcase(_, Config) -> cnode_bridge_test:stop(?config(ctx, Config)).
%%
%% echo(Config) ->
%%     Ctx = ?config(ctx, Config),
%%     {ok, Peer, A} = cnode_bridge_test:start_node(Ctx, #{name => "a"}),
%%     {ok, _, C} = cnode_bridge_test:start_cnode(Ctx, #{connect => [A], args => ["--demo"]}),
%%     hi = cnode_bridge_test:call(Peer, gen_server, call, [{echo, C}, hi]).
%% '''
%% ExUnit (`examples/elixir_app/test'):
%% ```
%% setup %{test: test} do
%%   ctx = :cnode_bridge_test.new(%{log_dir: ~c"_build/test_logs/#{test}"})
%%   on_exit(fn -> :cnode_bridge_test.stop(ctx) end)
%%   %{ctx: ctx}
%% end
%% '''
%% A context made in `test_helper.exs' needs `owner: :none' (that process ends
%% before the tests run) and a stop in `ExUnit.after_suite/1'; one made in
%% `setup_all' lives until the module's tests are done.
%%
%% A test node that is itself distributed (`elixir --sname t -S mix test', or
%% `ct_run -sname t') makes its contexts use the epmd it registered with, so
%% the nodes they start and the test node see each other; `mix test' on a plain
%% VM can re-run itself on a distributed one with `exec_distributed/2'.
%%
%% Your own C binary, started with `start_cnode(Ctx, #{exe => Path})', must:
%% take `--sname NAME@HOST' (or `--name' with `longnames'), `--exit-on-eof',
%% `--connect NODE' (repeatable; only when asked for) and then your `args';
%% read its cookie from the environment variable CNB_COOKIE and register with
%% the epmd at 127.0.0.1:$ERL_EPMD_PORT; print the line `READY <node>' on
%% stdout once it is published and accepts connections; log to stdout or
%% stderr (both are captured); exit when its stdin reaches end of file (within
%% 2 s, else SIGTERM, then SIGKILL 2 s later) and on SIGTERM (stop_cnode/2).
%% A service on libcnode_bridge does it as the `cnode' program does
%% (cnode/main.c): the flags into cnb_node_opts_t, the library registers with
%% that epmd, `cnb_node_keep_connected' for each `--connect', the READY line
%% once `cnb_node_start' returned, and a read of stdin until EOF before
%% `cnb_node_shutdown'. With `argv' the kit passes exactly those arguments
%% instead, and only the READY line (unless `wait_ready' is false) is needed.
%% @end
-module(cnode_bridge_test).

-export([new/0, new/1, stop/1, with/1, with/2]).
-export([epmd_port/1, cookie/1, log_files/1]).
-export([start_node/2, stop_node/2, call/4, call/5]).
-export([start_cnode/2, stop_cnode/2, kill_cnode/2, cnode_output/2, cnode_os_pid/2,
         cnode_alive/2, wait_cnode_exit/3, wait_line/4]).
-export([exec_distributed/2]).
-export([unique_name/1, hostname/0, free_port/0, wait_until/2, os_pid_alive/1]).

-type ctx() :: pid().
-type cnode() :: port().
-type opts() :: #{cookie => string(),
                  epmd => private | vm | inet:port_number(),
                  log_dir => file:filename(),
                  owner => pid() | none}.
-type node_opts() :: #{name => string(), exact_name => boolean(), longnames => boolean(),
                       host => string(),
                       cookie => string(), args => [string()],
                       env => [{string(), string()}], code_path => [file:filename()],
                       exec => file:filename() | {file:filename(), [string()]},
                       timeout => timeout()}.
-type cnode_opts() :: #{exe => file:filename(), name => string(), longnames => boolean(),
                        host => string(), connect => [node()], args => [string()],
                        argv => [string()], env => [{string(), string()}],
                        cookie => string(), wait_ready => boolean(),
                        timeout => non_neg_integer()}.
-export_type([ctx/0, cnode/0, opts/0, node_opts/0, cnode_opts/0]).

%%% ---------------------------------------------------------------- contexts

%% @equiv new(#{})
-spec new() -> ctx().
new() -> new(#{}).

%% @doc Starts a context owned by the calling process. Opts:
%% `epmd': `private' (a new epmd on a free port; the default unless this VM is
%% distributed), `vm' (the epmd this VM registered with: its ERL_EPMD_PORT, or
%% 4369; the default for a distributed VM), or a port number (an epmd already
%% running there, not stopped by the kit);
%% `cookie' (default: this VM's when it is distributed and `epmd' is `vm', else
%% a fresh one); `log_dir': each node's log goes to `<dir>/<node>.log' (see
%% log_files/1); `owner': the process whose end stops everything (default: the
%% caller; `none': only stop/1 or this VM's exit does).
-spec new(opts()) -> ctx().
new(Opts) ->
    Epmd = maps:get(epmd, Opts, case is_alive() of true -> vm; false -> private end),
    Cookie = case {Epmd, is_alive()} of
                 {vm, true} -> atom_to_list(erlang:get_cookie());
                 _ -> unique_name("cookie")
             end,
    Opts1 = maps:merge(#{cookie => Cookie}, Opts#{epmd => vm_epmd(Epmd)}),
    case cnode_bridge_test_ctx:start(maps:get(owner, Opts, self()), Opts1) of
        {ok, Ctx} -> Ctx;
        {error, R} -> erlang:error({cnode_bridge_test, R})
    end.

vm_epmd(vm) ->
    case init:get_argument(epmd_port) of
        {ok, [[P | _] | _]} -> list_to_integer(P);
        _ -> 4369
    end;
vm_epmd(E) -> E.

%% @doc Stops every C node (SIGTERM, SIGKILL after 5 s), peer node and epmd
%% the context started, by pid, and the context itself.
-spec stop(ctx()) -> ok.
stop(Ctx) ->
    try gen_server:call(Ctx, stop_all, 60000)
    catch exit:_ -> ok
    end.

%% @equiv with(#{}, F)
-spec with(fun((ctx()) -> T)) -> T.
with(F) -> with(#{}, F).

%% @doc Runs F(Ctx) with a new context and stops it however F ends.
-spec with(opts(), fun((ctx()) -> T)) -> T.
with(Opts, F) ->
    Ctx = new(Opts),
    try F(Ctx)
    after stop(Ctx)
    end.

%% @doc The epmd port the context's nodes register with.
-spec epmd_port(ctx()) -> inet:port_number().
epmd_port(Ctx) -> gen_server:call(Ctx, epmd_port).

-spec cookie(ctx()) -> string().
cookie(Ctx) -> gen_server:call(Ctx, cookie).

%% @doc With `log_dir': the log file of each node started so far, as
%% {NodeOrProgram, File}, oldest first.
-spec log_files(ctx()) -> [{string(), file:filename()}].
log_files(Ctx) -> gen_server:call(Ctx, log_files).

%%% ---------------------------------------------------------------- peers

%% @doc Starts a BEAM peer node (OTP `peer', controlled over its stdio, so it
%% halts when the context goes) registered with the context's epmd, with the
%% context's cookie and this VM's code path (minus OTP's own). Opts: `name'
%% (a prefix made unique; with `exact_name' => true the whole name, e.g.
%% one a C node was told to connect to before the node existed),
%% `longnames' (host 127.0.0.1 unless `host'),
%% `host', `cookie', `args' (more erl flags; `-connect_all false' unless they
%% say otherwise), `env', `code_path', `exec' (peer's), `timeout' (boot).
%% Returns once the node has booted.
-spec start_node(ctx(), node_opts()) -> {ok, pid(), node()} | {error, term()}.
start_node(Ctx, Opts) -> gen_server:call(Ctx, {start_node, Opts}, 120000).

-spec stop_node(ctx(), pid()) -> ok.
stop_node(Ctx, Peer) -> gen_server:call(Ctx, {stop_node, Peer}, 60000).

%% @doc Runs M:F(A) on a peer node (through its control connection; this VM
%% need not be distributed).
-spec call(pid(), module(), atom(), [term()]) -> term().
call(Peer, M, F, A) -> call(Peer, M, F, A, 30000).

-spec call(pid(), module(), atom(), [term()], timeout()) -> term().
call(Peer, M, F, A, Timeout) -> peer:call(Peer, M, F, A, Timeout).

%%% ---------------------------------------------------------------- C nodes

%% @doc Starts a C node: `exe' (default the application's `cnode' program)
%% with the flags the module doc lists (node `<name>_<unique>@<host>',
%% `--exit-on-eof', `--connect' for each of `connect', then `args'), the
%% cookie in CNB_COOKIE and ERL_EPMD_PORT in its environment plus `env'; or,
%% with `argv', exactly those arguments (stdin then /dev/null). Unless
%% `wait_ready' is false, waits up to `timeout' ms (15000) for its
%% `READY <node>' line. Returns a handle (its port) and its node name;
%% {error, {timeout | {exited, Status}, OutputLines}} when it never got ready
%% (it is stopped then).
-spec start_cnode(ctx(), cnode_opts()) -> {ok, cnode(), node() | undefined} | {error, term()}.
start_cnode(Ctx, Opts) ->
    gen_server:call(Ctx, {start_cnode, Opts}, maps:get(timeout, Opts, 15000) + 30000).

%% @doc Stops a C node with SIGTERM (SIGKILL after 5 s); returns its exit status.
-spec stop_cnode(ctx(), cnode()) -> {ok, integer() | undefined}.
stop_cnode(Ctx, H) -> gen_server:call(Ctx, {stop_cnode, H, "TERM"}, 30000).

%% @doc kill -9 of a C node.
-spec kill_cnode(ctx(), cnode()) -> {ok, integer() | undefined}.
kill_cnode(Ctx, H) -> gen_server:call(Ctx, {stop_cnode, H, "KILL"}, 30000).

%% @doc Every line the C node printed so far (stdout and stderr).
-spec cnode_output(ctx(), cnode()) -> [binary()].
cnode_output(Ctx, H) ->
    case gen_server:call(Ctx, {cnode, H, output}) of
        undefined -> [];
        Lines -> Lines
    end.

-spec cnode_os_pid(ctx(), cnode()) -> integer() | undefined.
cnode_os_pid(Ctx, H) -> gen_server:call(Ctx, {cnode, H, os_pid}).

-spec cnode_alive(ctx(), cnode()) -> boolean().
cnode_alive(Ctx, H) -> gen_server:call(Ctx, {cnode, H, alive}) =:= true.

%% @doc Waits until the C node exits by itself; returns its exit status.
-spec wait_cnode_exit(ctx(), cnode(), timeout()) -> {ok, integer()} | timeout.
wait_cnode_exit(Ctx, H, Timeout) ->
    Exit = fun() -> gen_server:call(Ctx, {cnode, H, exit}) end,
    case wait_until(fun() -> is_integer(Exit()) end, Timeout) of
        true -> {ok, Exit()};
        false -> timeout
    end.

%% @doc Waits up to Timeout ms for a line of the C node's output to match the
%% regular expression Re; the line, or {timeout, OutputSoFar}.
-spec wait_line(ctx(), cnode(), iodata(), timeout()) -> {ok, binary()} | {timeout, [binary()]}.
wait_line(Ctx, H, Re, Timeout) ->
    Match = fun() -> [L || L <- cnode_output(Ctx, H), re:run(L, Re) =/= nomatch] end,
    case wait_until(fun() -> Match() =/= [] end, Timeout) of
        true -> {ok, hd(Match())};
        false -> {timeout, cnode_output(Ctx, H)}
    end.

%%% ---------------------------------------------------------------- distribution

%% @doc Runs the program Exe with Args, with a private epmd of its own in
%% ERL_EPMD_PORT, its output copied to this process's standard output, and
%% returns its exit status; the epmd is stopped after it (and the program is
%% killed should this VM go first). For a test runner that must itself be a
%% distributed node, e.g. `mix test' re-run as
%% `elixir --sname t -S mix test' (see examples/elixir_app/test/test_helper.exs).
-spec exec_distributed(file:filename(), [string()]) -> integer().
exec_distributed(Exe, Args) ->
    with(#{epmd => private}, fun(Ctx) ->
        Env = [{"ERL_EPMD_PORT", integer_to_list(epmd_port(Ctx))}],
        case cnode_bridge_test_ctx:guard_port(null, Exe, [{args, Args}, {env, Env}]) of
            {ok, Port, _} -> relay(Port);
            {error, R} -> erlang:error({cnode_bridge_test, R})
        end
    end).

relay(Port) ->
    receive
        {Port, {data, {eol, L}}} -> io:put_chars([L, $\n]), relay(Port);
        {Port, {data, {noeol, L}}} -> io:put_chars(L), relay(Port);
        {Port, {exit_status, S}} -> S
    end.

%%% ---------------------------------------------------------------- helpers

%% @doc A name no other test picks: `Prefix_OsPid_Counter'.
-spec unique_name(string()) -> string().
unique_name(Prefix) ->
    lists:flatten(io_lib:format("~s_~s_~b",
                                [Prefix, os:getpid(), erlang:unique_integer([positive])])).

%% @doc The short host name `-sname' nodes get.
-spec hostname() -> string().
hostname() ->
    {ok, H} = inet:gethostname(),
    hd(string:split(H, ".")).

%% @doc A TCP port that was free a moment ago.
-spec free_port() -> inet:port_number().
free_port() ->
    {ok, L} = gen_tcp:listen(0, [{reuseaddr, true}]),
    {ok, P} = inet:port(L),
    ok = gen_tcp:close(L),
    P.

%% @doc Polls Fun every 5 ms until it returns true (true) or Timeout ms pass
%% (false); an exception in Fun counts as not yet.
-spec wait_until(fun(() -> boolean()), non_neg_integer()) -> boolean().
wait_until(Fun, Timeout) ->
    wait_until_(Fun, erlang:monotonic_time(millisecond) + Timeout).

wait_until_(Fun, Deadline) ->
    case try Fun() catch _:_ -> false end of
        true -> true;
        _ ->
            case erlang:monotonic_time(millisecond) >= Deadline of
                true -> false;
                false -> timer:sleep(5), wait_until_(Fun, Deadline)
            end
    end.

%% @doc True while the OS process runs (a zombie counts as gone).
-spec os_pid_alive(integer()) -> boolean().
os_pid_alive(OsPid) -> cnode_bridge_test_ctx:os_pid_alive(OsPid).
