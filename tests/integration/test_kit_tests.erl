%% Tests of the shipped test kit (erlang_side/src/cnode_bridge_test.erl): what it
%% starts, what it hands a C binary (the contract in its module doc), the logs
%% it keeps, and that nothing it started outlives the test that started it.
-module(test_kit_tests).
-include_lib("eunit/include/eunit.hrl").

-define(T(Name), {timeout, 120, fun Name/0}).

kit_test_() ->
    {setup, fun() -> ok end, fun(_) -> file:del_dir_r(base_dir()) end,
     [?T(ready_nodes_talk_and_logs_are_kept),
      ?T(owner_crash_stops_everything),
      ?T(killed_context_stops_everything),
      ?T(own_binary_gets_the_contract),
      ?T(never_ready_is_an_error_and_stopped),
      ?T(exec_distributed_runs_a_distributed_node)]}.

%% Every file the tests write is under this folder, removed after them.
base_dir() -> filename:join("/tmp", "cnb_kit_tests_" ++ os:getpid()).

tmp_dir(Tag) ->
    D = filename:join(base_dir(), cnode_bridge_test:unique_name(Tag)),
    ok = filelib:ensure_dir(filename:join(D, "x")),
    D.

%% A peer and a C node on the private epmd; a call across; each node's log in
%% the log directory.
ready_nodes_talk_and_logs_are_kept() ->
    Dir = tmp_dir("logs"),
    cnode_bridge_test:with(#{log_dir => Dir}, fun(C) ->
        {ok, P, A} = cnode_bridge_test:start_node(C, #{name => "a"}),
        {ok, H, CN} = cnode_bridge_test:start_cnode(C, #{connect => [A], args => ["--demo"]}),
        ?assertEqual(hi, cnode_bridge_test:call(P, gen_server, call, [{echo, CN}, hi])),
        ?assertEqual(integer_to_list(cnode_bridge_test:epmd_port(C)),
                     cnode_bridge_test:call(P, os, getenv, ["ERL_EPMD_PORT"])),
        ok = cnode_bridge_test:call(P, logger, error, ["kit marker ~p", [42]]),
        Logs = cnode_bridge_test:log_files(C),
        {_, CLog} = lists:keyfind(atom_to_list(CN), 1, Logs),
        {_, PLog} = lists:keyfind(atom_to_list(A), 1, Logs),
        ?assert(cnode_bridge_test:wait_until(fun() -> has(CLog, <<"READY ">>) end, 5000)),
        ?assert(cnode_bridge_test:wait_until(fun() -> has(PLog, <<"kit marker 42">>) end, 5000)),
        ?assertMatch({ok, _}, cnode_bridge_test:wait_line(C, H, "READY", 1000)),
        ?assertEqual({ok, 0}, cnode_bridge_test:stop_cnode(C, H)),
        %% Output stays readable after the stop.
        ?assertNotEqual([], cnode_bridge_test:cnode_output(C, H))
    end).

has(File, Bin) ->
    {ok, B} = file:read_file(File),
    binary:match(B, Bin) =/= nomatch.

%% The test process crashes: its epmd, peer and C node all go.
owner_crash_stops_everything() ->
    Self = self(),
    {Pid, Ref} = spawn_monitor(fun() ->
        C = cnode_bridge_test:new(),
        {ok, P, A} = cnode_bridge_test:start_node(C, #{name => "a"}),
        {ok, H, _} = cnode_bridge_test:start_cnode(C, #{connect => [A]}),
        PeerOs = list_to_integer(cnode_bridge_test:call(P, os, getpid, [])),
        Self ! {started, C, cnode_bridge_test:epmd_port(C), PeerOs,
                cnode_bridge_test:cnode_os_pid(C, H)},
        exit(test_crashed)
    end),
    receive {started, Ctx, Epmd, PeerOs, COs} -> ok end,
    receive {'DOWN', Ref, process, Pid, test_crashed} -> ok end,
    Gone = fun() -> not cnode_bridge_test:os_pid_alive(PeerOs) andalso
                        not cnode_bridge_test:os_pid_alive(COs) andalso
                        not tcp_open(Epmd) andalso not is_process_alive(Ctx)
           end,
    ?assert(cnode_bridge_test:wait_until(Gone, 20000)).

tcp_open(Port) ->
    case gen_tcp:connect({127, 0, 0, 1}, Port, [], 200) of
        {ok, S} -> gen_tcp:close(S), true;
        _ -> false
    end.

%% The context is killed outright (no clean-up code runs): the guards stop the
%% C node and epmd.
killed_context_stops_everything() ->
    C = cnode_bridge_test:new(#{owner => none}),
    {ok, H, _} = cnode_bridge_test:start_cnode(C, #{args => ["--log-level", "info"]}),
    COs = cnode_bridge_test:cnode_os_pid(C, H),
    Epmd = cnode_bridge_test:epmd_port(C),
    exit(C, kill),
    ?assert(cnode_bridge_test:wait_until(
              fun() -> not cnode_bridge_test:os_pid_alive(COs) andalso not tcp_open(Epmd) end,
              10000)).

%% A binary of one's own: the flags, environment and stdin the kit promises.
own_binary_gets_the_contract() ->
    Dir = tmp_dir("own"),
    Exe = filename:join(Dir, "own_node"),
    ok = file:write_file(Exe,
        "#!/bin/sh\n"
        "echo \"ARGS $*\"\n"
        "echo \"ENV $CNB_COOKIE $ERL_EPMD_PORT $MY_VAR\"\n"
        "echo \"READY $2\"\n"
        "cat >/dev/null\n"
        "echo eof > \"$(dirname \"$0\")/saw_eof\"\n"),
    ok = file:change_mode(Exe, 8#755),
    C = cnode_bridge_test:new(#{owner => none, cookie => "sekrit"}),
    {ok, H, Node} = cnode_bridge_test:start_cnode(
                      C, #{exe => Exe, name => "own", connect => ['a@b'],
                           args => ["--mine", "1"], env => [{"MY_VAR", "v"}]}),
    [_, Host] = string:split(atom_to_list(Node), "@"),
    ?assertEqual(cnode_bridge_test:hostname(), Host),
    ?assertMatch("own_" ++ _, atom_to_list(Node)),
    Out = cnode_bridge_test:cnode_output(C, H),
    Expect = iolist_to_binary(["ARGS --sname ", atom_to_list(Node),
                               " --exit-on-eof --connect a@b --mine 1"]),
    ?assertEqual(Expect, hd(Out)),
    ?assertEqual(iolist_to_binary(["ENV sekrit ",
                                   integer_to_list(cnode_bridge_test:epmd_port(C)), " v"]),
                 lists:nth(2, Out)),
    OsPid = cnode_bridge_test:cnode_os_pid(C, H),
    SawEof = filename:join(Dir, "saw_eof"),
    timer:sleep(200),
    ?assertNot(filelib:is_file(SawEof)),
    ?assert(cnode_bridge_test:cnode_alive(C, H)),
    exit(C, kill),
    %% EOF reached the program itself (not only a signal).
    ?assert(cnode_bridge_test:wait_until(
              fun() -> filelib:is_file(SawEof) end, 10000)),
    ?assert(cnode_bridge_test:wait_until(
              fun() -> not cnode_bridge_test:os_pid_alive(OsPid) end, 10000)).

%% No READY line: an error with the output, and the program is stopped.
never_ready_is_an_error_and_stopped() ->
    cnode_bridge_test:with(fun(C) ->
        ?assertMatch({error, {{exited, 3}, [<<"no luck">>]}},
                     cnode_bridge_test:start_cnode(
                       C, #{exe => "/bin/sh", argv => ["-c", "echo no luck; exit 3"]})),
        Dir = tmp_dir("slow"),
        Pidfile = filename:join(Dir, "pid"),
        ?assertMatch({error, {timeout, [<<"waiting">>]}},
                     cnode_bridge_test:start_cnode(
                       C, #{exe => "/bin/sh", timeout => 3000, % the shell's pidfile and line first
                            argv => ["-c", "echo $$ > " ++ Pidfile ++ "; echo waiting; exec sleep 60"]})),
        {ok, B} = file:read_file(Pidfile),
        OsPid = binary_to_integer(string:trim(B)),
        ?assert(cnode_bridge_test:wait_until(
                  fun() -> not cnode_bridge_test:os_pid_alive(OsPid) end, 10000))
    end).

%% exec_distributed/2: the program runs as a distributed node on an epmd of
%% its own, which is gone afterwards.
exec_distributed_runs_a_distributed_node() ->
    Dir = tmp_dir("exec"),
    Out = filename:join(Dir, "out"),
    Erl = os:find_executable("erl"),
    Eval = lists:flatten(io_lib:format(
             "file:write_file(~p, io_lib:format(\"~~p ~~s\", [is_alive(), os:getenv(\"ERL_EPMD_PORT\")])),"
             " halt(3).", [Out])),
    ?assertEqual(3, cnode_bridge_test:exec_distributed(
                      Erl, ["-sname", cnode_bridge_test:unique_name("x"), "-noshell",
                            "-eval", Eval])),
    {ok, B} = file:read_file(Out),
    [<<"true">>, Port] = binary:split(B, <<" ">>),
    ?assertNotEqual(<<"4369">>, Port),
    ?assertNot(tcp_open(binary_to_integer(Port))).
