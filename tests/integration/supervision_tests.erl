%% Integration tests of the OTP application's supervised C nodes (issue 8):
%% start/stop, restart after kill -9 with the old names gone, the C node
%% exiting with its BEAM node, bad options, logger integration, boot list.
-module(supervision_tests).
-include_lib("eunit/include/eunit.hrl").

-export([setup_app/0]).

-define(T(Name, Secs), {atom_to_list(Name), {timeout, Secs, fun() -> with_cluster(fun Name/1) end}}).

supervision_test_() ->
    [?T(start_call_stop, 60),
     ?T(kill9_restarted_names_gone, 60),
     ?T(c_node_exits_with_beam, 60),
     ?T(bad_option_starts_nothing, 30),
     ?T(logs_arrive_in_logger, 60),
     ?T(boot_list_from_app_env, 60)].

with_cluster(F) -> cnb_cluster:with(F).

setup_app() ->
    {ok, _} = application:ensure_all_started(cnode_bridge),
    ok.

app_node(C) -> app_node(C, []).

app_node(C, Args) ->
    {ok, A, _} = cnb_cluster:start_node(C, #{name => "app", args => Args}),
    ok = cnb_cluster:call(A, ?MODULE, setup_app, []),
    A.

call(A, M, F, Args) -> cnb_cluster:call(A, M, F, Args).

cname() -> list_to_atom(cnb_cluster:unique_name("sup")).

start_call_stop(C) ->
    A = app_node(C),
    Name = cname(),
    {ok, CN} = call(A, cnode_bridge, start_cnode, [Name, #{demo => true}]),
    ?assertEqual(hi, call(A, gen_server, call, [{echo, CN}, hi])),
    ?assert(lists:member(CN, call(A, erlang, nodes, [hidden]))),
    ?assertEqual({error, {already_started, CN}}, call(A, cnode_bridge, start_cnode, [Name, #{}])),
    OsPid = call(A, cnode_bridge, os_pid, [CN]),
    ?assert(is_integer(OsPid)),
    %% The cookie never appears on the command line.
    {ok, Cmdline} = file:read_file("/proc/" ++ integer_to_list(OsPid) ++ "/cmdline"),
    ?assertEqual(nomatch, binary:match(Cmdline, list_to_binary(cnb_cluster:cookie(C)))),
    ?assertEqual(ok, call(A, cnode_bridge, stop_cnode, [CN])),
    ?assertNot(cnb_cluster:os_pid_alive(OsPid)),
    ?assertEqual({error, not_found}, call(A, cnode_bridge, stop_cnode, [CN])),
    ?assertEqual([], call(A, cnode_bridge, which_cnodes, [])).

kill9_restarted_names_gone(C) ->
    A = app_node(C),
    {ok, CN} = call(A, cnode_bridge, start_cnode, [cname(), #{demo => true}]),
    {ok, W} = call(A, gen_server, call, [{cache_sup, CN}, {start, 1, x}]),
    ?assertEqual(W, call(A, global, whereis_name, [{cache, 1}])),
    Old = call(A, cnode_bridge, os_pid, [CN]),
    _ = os:cmd("kill -9 " ++ integer_to_list(Old)),
    %% Restarted (new OS process, answering), and the old name is gone.
    ?assert(cnb_cluster:wait_until(
              fun() ->
                      New = call(A, cnode_bridge, os_pid, [CN]),
                      is_integer(New) andalso New =/= Old andalso
                          call(A, gen_server, call, [{echo, CN}, ping]) =:= ping
              end, 20000)),
    ?assertEqual(undefined, call(A, global, whereis_name, [{cache, 1}])),
    {ok, W2} = call(A, gen_server, call, [{cache_sup, CN}, {start, 1, y}]),
    ?assertNotEqual(W, W2).

c_node_exits_with_beam(C) ->
    {ok, A, _} = cnb_cluster:start_node(C, #{name => "app"}),
    ok = call(A, ?MODULE, setup_app, []),
    {ok, CN} = call(A, cnode_bridge, start_cnode, [cname(), #{}]),
    OsPid = call(A, cnode_bridge, os_pid, [CN]),
    ok = cnb_cluster:stop_node(C, A),
    ?assert(cnb_cluster:wait_until(fun() -> not cnb_cluster:os_pid_alive(OsPid) end, 10000)).

bad_option_starts_nothing(C) ->
    A = app_node(C),
    ?assertEqual({error, {bad_option, {port, -1}}},
                 call(A, cnode_bridge, start_cnode, [cname(), #{port => -1}])),
    ?assertEqual({error, {bad_option, {colour, blue}}},
                 call(A, cnode_bridge, start_cnode, [cname(), #{colour => blue}])),
    ?assertMatch({error, _}, call(A, cnode_bridge, start_cnode, ["not an atom", #{}])),
    ?assertEqual([], call(A, cnode_bridge, which_cnodes, [])).

logs_arrive_in_logger(C) ->
    A = app_node(C),
    Cap = call(A, cnb_log_capture, install, []),
    {ok, CN} = call(A, cnode_bridge, start_cnode, [cname(), #{log_level => debug}]),
    ?assert(cnb_cluster:wait_until(
              fun() ->
                      Evs = call(A, cnb_log_capture, collect, [Cap, CN]),
                      lists:any(fun({info, T}) -> binary:match(T, <<"listening on port">>) =/= nomatch;
                                   (_) -> false end, Evs)
              end, 5000)),
    %% Lines keep their level: the C node's debug lines arrive as debug.
    ?assert(cnb_cluster:wait_until(
              fun() -> lists:keymember(debug, 1, call(A, cnb_log_capture, collect, [Cap, CN])) end,
              5000)).

boot_list_from_app_env(C) ->
    Name = cname(),
    Env = lists:flatten(io_lib:format("[{~p, #{demo => true}}]", [Name])),
    A = app_node(C, ["-cnode_bridge", "cnodes", Env]),
    [{CN, Pid}] = call(A, cnode_bridge, which_cnodes, []),
    ?assert(is_pid(Pid)),
    ?assertEqual(boot, call(A, gen_server, call, [{echo, CN}, boot])).
