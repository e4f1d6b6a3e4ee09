%% Tests of the integration test helper itself (support/cnb_cluster.erl): a
%% private epmd, peer nodes that find each other through it, and cleanup by pid.
-module(cluster_helper_tests).
-include_lib("eunit/include/eunit.hrl").

helper_test_() ->
    {timeout, 120, fun() ->
        C = cnb_cluster:new(),
        try
            Epmd = cnb_cluster:epmd_port(C),
            ?assert(is_integer(Epmd) andalso Epmd > 0),
            {ok, P1, N1} = cnb_cluster:start_node(C, #{name => "a"}),
            {ok, P2, N2} = cnb_cluster:start_node(C, #{name => "b"}),
            ?assertNotEqual(N1, N2),
            %% Both nodes registered with our epmd, not the default one.
            ?assertEqual(integer_to_list(Epmd), cnb_cluster:call(P1, os, getenv, ["ERL_EPMD_PORT"])),
            ?assertEqual(pong, cnb_cluster:call(P1, net_adm, ping, [N2])),
            {ok, Names} = cnb_cluster:call(P2, erl_epmd, names, ["localhost"]),
            ?assertEqual(2, length(Names)),
            %% -name nodes work too (on 127.0.0.1).
            {ok, P3, N3} = cnb_cluster:start_node(C, #{name => "l", longnames => true}),
            ?assertMatch([_, "127.0.0.1"], string:split(atom_to_list(N3), "@")),
            ?assertEqual(true, cnb_cluster:call(P3, erlang, is_alive, [])),
            ok = cnb_cluster:stop_node(C, P2),
            ?assertNot(is_process_alive(P2))
        after
            cnb_cluster:stop(C)
        end
    end}.

cleanup_by_pid_test_() ->
    {timeout, 60, fun() ->
        C = cnb_cluster:new(),
        {ok, P1, N1} = cnb_cluster:start_node(C, #{name => "x"}),
        OsPid = list_to_integer(cnb_cluster:call(P1, os, getpid, [])),
        ?assert(cnb_cluster:os_pid_alive(OsPid)),
        ?assert(is_atom(N1)),
        cnb_cluster:stop(C),
        ?assert(cnb_cluster:wait_until(fun() -> not cnb_cluster:os_pid_alive(OsPid) end, 10000))
    end}.
