%% A Common Test suite using cnode_bridge's test kit (cnode_bridge_test): each
%% test case gets a context of its own -- a private epmd, the nodes the case
%% starts, their logs in the case's directory -- stopped when the case ends,
%% even when it crashes. Copy it into your project's test/ folder with
%% cnode_bridge as a dependency and run `rebar3 ct'; `make test' does exactly
%% that with cnode_bridge as a git dependency (tests/deps/run).
-module(cnode_bridge_example_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_testcase/2, end_per_testcase/2]).
-export([call_a_c_worker/1, c_worker_in_global/1, nodes_go_with_the_case/1]).

all() -> [call_a_c_worker, c_worker_in_global, nodes_go_with_the_case].

init_per_testcase(Case, Config) ->
    Dir = filename:join(?config(priv_dir, Config), Case),
    %% Owned by this process: the one that runs the case.
    [{ctx, cnode_bridge_test:new(#{log_dir => Dir})} | Config].

end_per_testcase(_Case, Config) ->
    cnode_bridge_test:stop(?config(ctx, Config)).

%% An Erlang node and a C node (the demo workers) on the private epmd.
call_a_c_worker(Config) ->
    Ctx = ?config(ctx, Config),
    {ok, Peer, A} = cnode_bridge_test:start_node(Ctx, #{name => "a"}),
    {ok, _C, CNode} = cnode_bridge_test:start_cnode(Ctx, #{connect => [A], args => ["--demo"]}),
    ?assertEqual({hello, 1}, cnode_bridge_test:call(Peer, gen_server, call,
                                                    [{echo, CNode}, {hello, 1}])).

%% A C worker registered in :global, seen from a second Erlang node.
c_worker_in_global(Config) ->
    Ctx = ?config(ctx, Config),
    %% Kit peers stay out of a full mesh (and :global's name sync) unless asked.
    Mesh = #{args => ["-connect_all", "true"]},
    {ok, PA, A} = cnode_bridge_test:start_node(Ctx, Mesh#{name => "a"}),
    {ok, PB, B} = cnode_bridge_test:start_node(Ctx, Mesh#{name => "b"}),
    {ok, _, CNode} = cnode_bridge_test:start_cnode(Ctx, #{connect => [A], args => ["--demo"]}),
    {ok, W} = cnode_bridge_test:call(PA, gen_server, call, [{cache_sup, CNode}, {start, 7, <<"x">>}]),
    true = cnode_bridge_test:call(PB, net_kernel, connect_node, [A]),
    ?assert(cnode_bridge_test:wait_until(
              fun() -> cnode_bridge_test:call(PB, global, whereis_name, [{cache, 7}]) =:= W end,
              10000)),
    ?assertEqual({ok, <<"x">>}, cnode_bridge_test:call(PB, gen_server, call,
                                                       [{global, {cache, 7}}, get])),
    ct:log("nodes ~p, logs ~p", [[A, B, CNode], cnode_bridge_test:log_files(Ctx)]).

%% What a case starts is gone when the case ends: here a process standing in
%% for a crashed case.
nodes_go_with_the_case(_Config) ->
    Self = self(),
    {Pid, Ref} = spawn_monitor(fun() ->
        Ctx = cnode_bridge_test:new(),
        {ok, C, _} = cnode_bridge_test:start_cnode(Ctx, #{}),
        Self ! {os_pid, cnode_bridge_test:cnode_os_pid(Ctx, C)},
        exit(crashed)
    end),
    OsPid = receive {os_pid, P} -> P end,
    receive {'DOWN', Ref, process, Pid, crashed} -> ok end,
    ?assert(cnode_bridge_test:wait_until(
              fun() -> not cnode_bridge_test:os_pid_alive(OsPid) end, 10000)).
