%% Integration tests of the installed C library (issue 18): `make install'
%% into a temporary prefix (and a DESTDIR stage); the shared library's soname
%% and its exports (cnb_* only: no ei_*, no cnb__*); pkg-config; and
%% examples/c_service, copied out of the repository and built from the
%% installed tree alone, then driven from Erlang: call, cast, info, a reply
%% sent later from another thread, :global (registered right after
%% cnb_node_keep_connected, so it waits for the connection) and the shared
%% registry, a link made from the service's main thread (cnb_worker_link),
%% SIGTERM. README.md's C block is that example and compiles.
-module(c_service_tests).
-include_lib("eunit/include/eunit.hrl").

%% Run on the peer node.
-export([start_owner/0, stop_owner_and_watch/3, later_and_get/1, ping/1]).

c_service_test_() ->
    {setup, fun install/0, fun cleanup/1,
     fun(Tree) ->
             [{"installed tree: files, soname, pkg-config",
               fun() -> installed_tree(Tree) end},
              {"the shared library exports cnb_* names only",
               fun() -> exports(Tree) end},
              {"DESTDIR stages the tree", {timeout, 300, fun() -> destdir(Tree) end}},
              {"README's C block is examples/c_service and compiles",
               {timeout, 120, fun() -> readme_block(Tree) end}},
              {"c_service built from the installed tree, driven from Erlang",
               {timeout, 180, fun() -> drive(Tree) end}},
              {":global registration waits for the anchor node to come up",
               {timeout, 180, fun() -> anchor_later(Tree) end}}]
     end}.

%%% --------------------------------------------------------------- setup

%% make install PREFIX=<tmp>/usr; returns the temporary folder.
install() ->
    Root = cnb_cluster:root(),
    Tmp = filename:join([Root, "build", "c_service_test", cnb_cluster:unique_name("t")]),
    ok = filelib:ensure_dir(filename:join(Tmp, "x")),
    {0, _} = sh(make_cmd(Root, ["install", "PREFIX=" ++ prefix(Tmp)])),
    Tmp.

cleanup(Tmp) ->
    {0, _} = sh("rm -rf '" ++ Tmp ++ "'"),
    ok.

prefix(Tmp) -> filename:join(Tmp, "usr").

pc_env(Tmp) -> "PKG_CONFIG_PATH='" ++ filename:join([prefix(Tmp), "lib", "pkgconfig"]) ++ "' ".

%% make in Root, without the jobserver of a `make test' that may run us. When
%% the suites run with another build tree (BUILD=build-otpN: scripts/test-otp,
%% in a chroot with another OTP and libc), the library and the cnode program
%% are built under it, not into build/ and erlang_side/priv: there the chroot's
%% toolchain would relink the host's cnode against its newer glibc, and every
%% later run on the host (the mixed-release test) would fail to start it.
make_cmd(Root, Args) ->
    Own = case os:getenv("BUILD") of
              B when B =:= false; B =:= ""; B =:= "build" -> [];
              B -> Dir = filename:join(B, "c_service"),
                   ["BUILD=" ++ Dir, "PRIV=" ++ filename:join(Dir, "priv")]
          end,
    "env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make --no-print-directory -C '" ++ Root ++ "' " ++
        lists:join(" ", Own ++ Args).

%% Runs a shell command; {ExitStatus, Output}. A failure prints the output.
sh(Cmd) ->
    Port = open_port({spawn_executable, "/bin/sh"},
                     [{args, ["-c", Cmd ++ " 2>&1"]}, exit_status, binary, stream]),
    collect(Port, Cmd, []).

collect(Port, Cmd, Acc) ->
    receive
        {Port, {data, D}} -> collect(Port, Cmd, [D | Acc]);
        {Port, {exit_status, S}} ->
            Out = iolist_to_binary(lists:reverse(Acc)),
            S =:= 0 orelse io:format(user, "~n$ ~s~n~s~n", [Cmd, Out]),
            {S, Out}
    after 300000 -> error({timeout, Cmd})
    end.

major() ->
    {ok, H} = file:read_file(filename:join([cnb_cluster:root(), "include", "cnode_bridge.h"])),
    {match, [V]} = re:run(H, "#define CNB_VERSION_STRING \"([0-9.]+)\"",
                          [{capture, all_but_first, list}]),
    %% The soname's version: MAJOR, or 0.MINOR before 1.0 (Makefile).
    case string:split(V, ".", all) of
        ["0", Minor | _] -> {V, "0." ++ Minor};
        [Major | _] -> {V, Major}
    end.

%%% --------------------------------------------------------------- the tree

installed_tree(Tmp) ->
    P = prefix(Tmp),
    {Version, Major} = major(),
    Lib = filename:join(P, "lib"),
    [?assert(filelib:is_regular(filename:join(P, F)))
     || F <- ["lib/libcnode_bridge.a", "lib/libcnode_bridge.so." ++ Version,
              "lib/pkgconfig/cnode_bridge.pc", "bin/cnode",
              "include/cnode_bridge/cnode_bridge.h", "include/cnode_bridge/cnb_common.h",
              "include/cnode_bridge/cnb_registry.h", "include/cnode_bridge/cnb_term.h",
              "include/cnode_bridge/cnb_registry_worker.h"]],
    ?assertEqual({ok, "libcnode_bridge.so." ++ Version},
                 file:read_link(filename:join(Lib, "libcnode_bridge.so." ++ Major))),
    ?assertEqual({ok, "libcnode_bridge.so." ++ Major},
                 file:read_link(filename:join(Lib, "libcnode_bridge.so"))),
    {0, Dyn} = sh("readelf -d '" ++ filename:join(Lib, "libcnode_bridge.so") ++ "'"),
    ?assertMatch({match, _}, re:run(Dyn, "SONAME\\).*\\[libcnode_bridge\\.so\\." ++ Major ++ "\\]")),
    {0, Flags} = sh(pc_env(Tmp) ++ "pkg-config --cflags --libs cnode_bridge"),
    ?assertMatch({match, _}, re:run(Flags, "-I" ++ P ++ "/include/cnode_bridge( |$)")),
    ?assertMatch({match, _}, re:run(Flags, "-L" ++ Lib ++ " -lcnode_bridge")),
    {0, V} = sh(pc_env(Tmp) ++ "pkg-config --modversion cnode_bridge"),
    ?assertEqual(Version, string:trim(binary_to_list(V))).

exports(Tmp) ->
    So = filename:join([prefix(Tmp), "lib", "libcnode_bridge.so"]),
    {0, Out} = sh("nm -D --defined-only '" ++ So ++ "'"),
    %% "0000000000015b80 T cnb_version@@CNODE_BRIDGE_0": the name before "@@".
    Names = [hd(string:split(lists:last(string:lexemes(L, " ")), "@"))
             || L <- string:lexemes(binary_to_list(Out), "\n")],
    Bad = [N || N <- Names, re:run(N, "^cnb_[a-z]") =:= nomatch, N =/= "CNODE_BRIDGE_0"],
    ?assertEqual([], Bad),
    [?assert(lists:member(N, Names))
     || N <- ["cnb_version", "cnb_node_wait_connected", "cnb_worker_link",
              "cnb_registry_worker_start", "cnb_registry_register_term", "cnb_spawn"]],
    %% Nothing of ei's among the library's undefined names either: ei is
    %% linked in, not asked of the program. (The one cnb__ name there is the
    %% registry's weak fault-injection hook of the unit tests, never defined.)
    {0, Und} = sh("nm -D --undefined-only '" ++ So ++ "'"),
    ?assertEqual(nomatch, re:run(Und, "\\bei_")).

destdir(Tmp) ->
    Stage = filename:join(Tmp, "stage"),
    {0, _} = sh(make_cmd(cnb_cluster:root(), ["install", "DESTDIR=" ++ Stage, "PREFIX=/opt/cnb"])),
    {Version, _} = major(),
    ?assert(filelib:is_regular(filename:join(Stage, "opt/cnb/lib/libcnode_bridge.so." ++ Version))),
    ?assert(filelib:is_regular(filename:join(Stage, "opt/cnb/bin/cnode"))),
    {ok, Pc} = file:read_file(filename:join(Stage, "opt/cnb/lib/pkgconfig/cnode_bridge.pc")),
    ?assertMatch({match, _}, re:run(Pc, "^prefix=/opt/cnb$", [multiline])),
    ?assertMatch({match, _}, re:run(Pc, "^includedir=/opt/cnb/include$", [multiline])).

%% The first ```c block of README.md's "Using it from C" is the example's
%% source, byte for byte, and compiles against the installed tree.
readme_block(Tmp) ->
    Root = cnb_cluster:root(),
    {ok, Readme} = file:read_file(filename:join(Root, "README.md")),
    [_, Section] = binary:split(Readme, <<"\n## Using it from C\n">>),
    [_, FromBlock] = binary:split(Section, <<"\n```c\n">>),
    [Block, _] = binary:split(FromBlock, <<"\n```\n">>),
    {ok, Src} = file:read_file(filename:join([Root, "examples", "c_service", "c_service.c"])),
    ?assertEqual(Src, <<Block/binary, "\n">>),
    C = filename:join(Tmp, "readme_block.c"),
    ok = file:write_file(C, <<Block/binary, "\n">>),
    {S, _} = sh("cc -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror "
                "-Wno-unused-parameter -o '" ++ filename:join(Tmp, "readme_block") ++ "' '" ++
                    C ++ "' $(" ++ pc_env(Tmp) ++ "pkg-config --cflags --libs cnode_bridge)"),
    ?assertEqual(0, S).

%%% --------------------------------------------------------------- the example

%% Copies examples/c_service out of the repository and builds it there with
%% its own Makefile and the installed tree's pkg-config file.
build_example(Tmp) ->
    Dir = filename:join(Tmp, "c_service"),
    Src = filename:join([cnb_cluster:root(), "examples", "c_service"]),
    {0, _} = sh("rm -rf '" ++ Dir ++ "' && cp -r '" ++ Src ++ "' '" ++ Dir ++ "' && rm -f '" ++
                    Dir ++ "/c_service'"),
    {0, _} = sh("env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -C '" ++ Dir ++ "' " ++
                    "PKG_CONFIG_PATH=" ++ filename:join([prefix(Tmp), "lib", "pkgconfig"])),
    filename:join(Dir, "c_service").

drive(Tmp) ->
    Exe = build_example(Tmp),
    cnb_cluster:with(fun(C) -> drive(C, Exe) end).

drive(C, Exe) ->
    {ok, A, NA} = cnb_cluster:start_node(C, #{name => "app"}),
    Owner = cnb_cluster:call(A, ?MODULE, start_owner, []),
    SName = cnb_cluster:unique_name("svc"),
    {ok, Port, CN} = cnb_cluster:start_cnode(
                       C, {[SName, atom_to_list(NA), "c_service_owner"],
                           #{exe => Exe, env => [{"CNB_COOKIE", cnb_cluster:cookie(C)}]}}),
    Counter = {counter, CN},
    GCall = fun(Req) -> cnb_cluster:call(A, gen_server, call, [Counter, Req, 10000]) end,
    %% call and cast
    ?assertEqual(0, GCall(get)),
    ok = cnb_cluster:call(A, gen_server, cast, [Counter, {add, 5}]),
    ?assertEqual(6, GCall({add, 1})),
    ?assertEqual({error, unknown_request}, GCall(what)),
    %% a reply sent later, from another thread, while the worker answers others
    ?assertEqual({{later, hello}, 6}, cnb_cluster:call(A, ?MODULE, later_and_get, [CN])),
    %% info: {ping, Pid} -> {pong, Worker}
    W = cnb_cluster:call(A, ?MODULE, ping, [CN]),
    ?assert(is_pid(W)),
    ?assertEqual(CN, node(W)),
    %% :global and the shared registry name the worker
    ?assertEqual(W, cnb_cluster:call(A, global, whereis_name, [{c_service, counter}])),
    ?assertEqual([{W, <<"counter">>}],
                 cnb_cluster:call(A, gen_server, call,
                                  [{cnode_registry, CN}, {lookup, {c_service, counter}}])),
    %% the link made from the service's main thread: the owner's end ends the
    %% worker with the same reason, and its :global name goes
    ?assertEqual({'DOWN', owner_done},
                 cnb_cluster:call(A, ?MODULE, stop_owner_and_watch, [Owner, W, owner_done])),
    ?assert(cnb_cluster:wait_until(
              fun() -> cnb_cluster:call(A, global, whereis_name, [{c_service, counter}])
                           =:= undefined end, 10000)),
    %% SIGTERM: a clean stop, exit status 0
    ?assertEqual({ok, 0}, cnb_cluster:stop_cnode(C, Port)).

%% The service starts before its peer exists: cnb_global_register, right
%% after cnb_node_keep_connected, waits for the connection (made when the
%% node comes up, by keep_connected's retries) instead of failing at once
%% with CNB_ENOCONN.
anchor_later(Tmp) ->
    Exe = filename:join([Tmp, "c_service", "c_service"]),
    true = filelib:is_regular(Exe) orelse build_example(Tmp) =:= Exe,
    cnb_cluster:with(
      fun(C) ->
              Name = cnb_cluster:unique_name("late"),
              NA = list_to_atom(Name ++ "@" ++ cnb_cluster:hostname()),
              {ok, Port, undefined} = cnb_cluster:start_cnode(
                                        C, {[cnb_cluster:unique_name("svc"), atom_to_list(NA)],
                                            #{exe => Exe, wait_ready => false,
                                              env => [{"CNB_COOKIE", cnb_cluster:cookie(C)}]}}),
              timer:sleep(1000), % its first connection attempts fail: nobody there
              ?assert(cnb_cluster:cnode_alive(C, Port)),
              {ok, A, NA} = cnb_cluster:start_node(C, #{name => Name, exact_name => true}),
              ok = cnb_cnode:wait_line(C, Port, "^READY "),
              W = cnb_cluster:call(A, global, whereis_name, [{c_service, counter}]),
              ?assert(is_pid(W)),
              ?assertEqual({ok, 0}, cnb_cluster:stop_cnode(C, Port))
      end).

%%% --------------------------------------------------------------- on the peer

%% A process registered as c_service_owner that ends with Reason on
%% {stop, Reason}.
start_owner() ->
    Self = self(),
    P = spawn(fun() ->
                      register(c_service_owner, self()),
                      Self ! registered,
                      receive {stop, Reason} -> exit(Reason) end
              end),
    receive registered -> P after 5000 -> error(owner_not_registered) end.

%% Monitors W, stops Owner with Reason, and says what W's DOWN says.
stop_owner_and_watch(Owner, W, Reason) ->
    R = monitor(process, W),
    Owner ! {stop, Reason},
    receive {'DOWN', R, process, _, Why} -> {'DOWN', Why} after 20000 -> timeout end.

%% {later, 3000, hello} from one process; while it waits, a get from this one
%% is answered (the worker is not blocked) and the caller still waits.
later_and_get(CN) ->
    Self = self(),
    Caller = spawn(fun() ->
                           Self ! {later, gen_server:call({counter, CN}, {later, 3000, hello}, 10000)}
                   end),
    N = gen_server:call({counter, CN}, get, 10000),
    true = is_process_alive(Caller),
    receive {later, R} -> {R, N} after 10000 -> {timeout, N} end.

ping(CN) ->
    {counter, CN} ! {ping, self()},
    receive {pong, W} -> W after 5000 -> timeout end.
