%% Integration tests of the `cnode' program's command line and its info log
%% (issue 18): a bad flag named with why, -h / --help, --version (the same
%% version as the OTP app's), and a worker's start, its exit with the reason,
%% and a :global registration each logged at info with pid and name. The real
%% binary throughout.
-module(cli_tests).
-include_lib("eunit/include/eunit.hrl").

cli_test_() ->
    [{"a bad flag is named, with why", fun bad_flag_named/0},
     {"-h and --help", fun help/0},
     {"--version", fun version/0},
     {timeout, 90, {"workers and :global names logged at info", fun worker_lines/0}}].

exe() -> filename:join([cnb_cluster:root(), "erlang_side", "priv", "cnode"]).

%% Runs the program with Args (no node starts: each exits at once); returns
%% {ExitStatus, Stdout, Stderr}.
run(Args) ->
    Dir = filename:join(cnb_cluster:root(), "build"),
    Err = filename:join(Dir, cnb_cluster:unique_name("cli_err")),
    P = open_port({spawn_executable, "/bin/sh"},
                  [{args, ["-c", "exec \"$0\" \"$@\" 2>\"$CLI_ERR\"", exe() | Args]},
                   {env, [{"CLI_ERR", Err}]}, exit_status, binary, use_stdio]),
    {Status, Out} = collect(P, <<>>),
    {ok, E} = file:read_file(Err),
    ok = file:delete(Err),
    {Status, binary_to_list(Out), binary_to_list(E)}.

collect(P, Acc) ->
    receive
        {P, {data, D}} -> collect(P, <<Acc/binary, D/binary>>);
        {P, {exit_status, S}} -> {S, Acc}
    after 10000 -> error(cnode_did_not_exit)
    end.

bad_flag_named() ->
    Cases =
        [{["--sname", "x", "--port", "99999"],
          "bad value '99999' for --port: want a whole number from 0 to 65535"},
         {["--sname", "x", "--ticktime", "0"],
          "bad value '0' for --ticktime: want a whole number from 1 to 86400"},
         {["--sname", "x", "--log-level", "loud"],
          "bad value 'loud' for --log-level: want error, warning, info or debug"},
         {["--sname", "x", "--tls-verify", "maybe"],
          "bad value 'maybe' for --tls-verify: want peer or none"},
         {["--sname", "x", "--bogus"], "unknown or ambiguous flag '--bogus'"},
         {["--sname", "x", "--port"], "--port needs a value"},
         {["--sname", "x", "--demo=yes"], "--demo takes no value"},
         {["--sname", "x", "extra"], "unexpected argument 'extra'"},
         {[], "give exactly one of --sname NAME[@HOST] or --name NAME[@HOST]"},
         {["--sname", "x", "--name", "y@h"],
          "give exactly one of --sname NAME[@HOST] or --name NAME[@HOST]"}],
    [begin
         {Status, Out, Err} = run(Args),
         ?assertEqual({Args, 2}, {Args, Status}),
         ?assertEqual({Args, ""}, {Args, Out}),
         %% One line, naming the flag and why, and where the flags are listed.
         ?assertEqual({Args, "cnode: " ++ Why ++ " (cnode --help lists the flags)\n"},
                      {Args, Err}),
         ?assertEqual(nomatch, string:find(Err, "bad arguments"))
     end || {Args, Why} <- Cases].

help() ->
    [begin
         {Status, Out, Err} = run([H]),
         ?assertEqual({H, 0, ""}, {H, Status, Err}),
         ?assertMatch("usage: cnode " ++ _, Out),
         [?assertNotEqual({H, F, nomatch}, {H, F, string:find(Out, F)})
          || F <- ["--sname", "--tls-cert", "--help", "--version", "--demo"]]
     end || H <- ["-h", "--help"]].

version() ->
    {ok, [{application, cnode_bridge, Props}]} =
        file:consult(filename:join([cnb_cluster:root(), "erlang_side", "src",
                                    "cnode_bridge.app.src"])),
    Vsn = proplists:get_value(vsn, Props),
    ?assertEqual({0, "cnode " ++ Vsn ++ "\n", ""}, run(["--version"])).

%% An Erlang node starts a cache worker on the C node (it registers in
%% :global), stops it, and has a probe crash: each step is one info line
%% with the worker's pid and name (or the :global name) and, at the end, the
%% reason.
worker_lines() ->
    cnb_cluster:with(
      fun(C) ->
              {ok, A, NA} = cnb_cluster:start_node(C, #{name => "a"}),
              {ok, Port, CN} = cnb_cluster:start_cnode(
                                 C, ["--cookie", cnb_cluster:cookie(C), "--sname",
                                     cnb_cluster:unique_name("c"), "--demo",
                                     "--connect", atom_to_list(NA)]),
              ?assert(cnb_cluster:wait_until(
                        fun() -> lists:member(CN, cnb_cluster:call(A, erlang, nodes, [hidden]))
                        end, 10000)),
              %% The demo's named workers: started, with name.
              Echo = pid_text(cnb_cluster:call(A, dist_tests, echo_pid, [CN])),
              wait_line(C, Port, "\\[info\\] .*worker " ++ Echo ++ " echo started"),
              {ok, W} = cnb_cluster:call(A, gen_server, call,
                                         [{cache_sup, CN}, {start, 7, content}]),
              WT = pid_text(W),
              wait_line(C, Port, "\\[info\\] .*worker " ++ WT ++ "( \\S+)? started"),
              wait_line(C, Port, "\\[info\\] .*global: \\{cache, ?7\\} registered for " ++ WT),
              ok = cnb_cluster:call(A, gen_server, call, [W, stop]),
              wait_line(C, Port, "\\[info\\] .*worker " ++ WT ++ "( \\S+)? ended: normal"),
              {ok, Probe} = cnb_cluster:call(A, gen_server, call, [{probe, CN}, spawn]),
              catch cnb_cluster:call(A, gen_server, call, [Probe, crash, 2000]),
              wait_line(C, Port, "\\[info\\] .*worker " ++ pid_text(Probe) ++
                            "( \\S+)? ended: \\{callback_failed, ?handle_call,"),
              ok
      end).

%% "<N.S>", as the C node's log writes a pid of its own.
pid_text(Pid) ->
    [_, N, S] = string:lexemes(pid_to_list(Pid), "<.>"),
    "<" ++ N ++ "\\." ++ S ++ ">".

wait_line(C, Port, Re) ->
    Has = fun() -> lists:any(fun(L) -> re:run(L, Re) =/= nomatch end,
                             cnb_cluster:cnode_output(C, Port)) end,
    case cnb_cluster:wait_until(Has, 10000) of
        true -> ok;
        false -> erlang:error({log_line_missing, Re,
                               [binary_to_list(L) || L <- cnb_cluster:cnode_output(C, Port)]})
    end.
