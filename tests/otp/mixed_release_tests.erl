%% mixed_release_tests: one cluster of Erlang nodes on OTP 25 (this host),
%% 27 and 29 (in their chroots, scripts/otp-chroot) at once, plus the real C
%% node, all registered with one epmd on this host (cnb_cluster's, on its own
%% port): :global names of C workers seen and called from every release,
%% gen_server calls and sys:get_state from each release, and one cnode_registry
%% in remote mode with an entry from each release seen by all.
%%
%% Run by scripts/test-otp after the per-release suites (it needs root, the
%% chroots and build-otp27/ and build-otp29/ built by them); each chroot node
%% loads that release's build of the test helpers and the application.
-module(mixed_release_tests).

-include_lib("eunit/include/eunit.hrl").

-define(RELEASES, [25, 27, 29]).

mixed_test_() ->
    {timeout, 300, fun mixed_cluster/0}.

mixed_cluster() ->
    C = cnb_cluster:new(),
    try
        run(C)
    after
        cnb_cluster:stop(C)
    end.

run(C) ->
    Nodes = [start(C, Rel) || Rel <- ?RELEASES],
    %% Every release reports itself; the Erlang nodes form one visible cluster.
    [?assertEqual(integer_to_list(Rel), cnb_cluster:call(P, erlang, system_info, [otp_release]))
     || {Rel, P, _} <- Nodes],
    [{_, P25, N25} | _] = Nodes,
    [pong = cnb_cluster:call(P25, net_adm, ping, [N]) || {_, _, N} <- tl(Nodes)],
    [ok = cnb_cluster:call(P, global, sync, []) || {_, P, _} <- Nodes],
    {ok, _Port, CN} = cnb_cluster:start_cnode(
                        C, ["--cookie", cnb_cluster:cookie(C), "--sname",
                            cnb_cluster:unique_name("mix"), "--demo", "--connect", atom_to_list(N25)]),
    true = cnb_cluster:wait_until(
             fun() -> lists:member(CN, cnb_cluster:call(P25, erlang, nodes, [hidden])) end, 10000),
    global_names(Nodes, CN),
    calls(Nodes, CN),
    registry_remote(Nodes, CN).

%% A C worker started from each release takes {cache, Rel} in :global; every
%% node resolves every name to the C pid and calls it through :global.
global_names(Nodes, CN) ->
    Ws = [begin
              {ok, W} = cnb_cluster:call(P, gen_server, call,
                                         [{cache_sup, CN}, {start, Rel, {made_on, Rel}}, 30000]),
              ?assertEqual(CN, node(W)),
              {Rel, W}
          end || {Rel, P, _} <- Nodes],
    [?assertEqual({Asker, Rel, W},
                  {Asker, Rel, cnb_cluster:call(P, global, whereis_name, [{cache, Rel}])})
     || {Asker, P, _} <- Nodes, {Rel, W} <- Ws],
    [?assertEqual({Asker, Rel, {ok, {made_on, Rel}}},
                  {Asker, Rel, cnb_cluster:call(P, gen_server, call, [{global, {cache, Rel}}, get])})
     || {Asker, P, _} <- Nodes, {Rel, _} <- Ws],
    %% The C side sees the names the Erlang nodes hold.
    Names = cnb_cluster:call(P1 = element(2, hd(Nodes)), gen_server, call, [{probe, CN}, global_names]),
    [?assert(lists:member({cache, Rel}, Names)) || {Rel, _} <- Ws],
    %% A worker stopped: its name goes on every release.
    {Rel0, W0} = hd(Ws),
    ok = cnb_cluster:call(P1, gen_server, call, [W0, stop]),
    [?assert(cnb_cluster:wait_until(
               fun() -> cnb_cluster:call(P, global, whereis_name, [{cache, Rel0}]) =:= undefined end,
               10000))
     || {_, P, _} <- Nodes].

%% Plain gen_server calls to registered C workers and sys:get_state from each
%% release (25 takes the state itself, 26.1+ {ok, State}; cnode/rt_gen.c).
calls(Nodes, CN) ->
    [begin
         ?assertEqual({Rel, {ok, {made_on, 29}}},
                      {Rel, cnb_cluster:call(P, gen_server, call, [{global, {cache, 29}}, get])}),
         W = cnb_cluster:call(P, global, whereis_name, [{cache, 29}]),
         ?assertMatch({Rel, {cache, _}}, {Rel, cnb_cluster:call(P, sys, get_state, [W, 5000])}),
         ?assertMatch({Rel, {status, W, _, _}}, {Rel, cnb_cluster:call(P, sys, get_status, [W, 5000])}),
         ?assertEqual({Rel, pong}, {Rel, cnb_cluster:call(P, net_adm, ping, [CN])})
     end || {Rel, P, _} <- Nodes].

%% cnode_registry attached in remote mode on every release: each registers
%% {k, Rel}; every node sees all three entries with the owner's pid, and the
%% C node's own workers' entries.
registry_remote(Nodes, CN) ->
    [begin
         {_K, {ok, _}} = cnb_cluster:call(P, nif_tests, keeper, [{rr, CN, #{mode => remote}}]),
         ?assertEqual(remote, cnb_cluster:call(P, gen_server, call, [rr, mode]))
     end || {_, P, _} <- Nodes],
    Owners = [begin
                  {O, {ok, _}} = cnb_cluster:call(P, nif_tests, owner, [rr, {k, Rel}, {v, Rel}]),
                  {Rel, O}
              end || {Rel, P, _} <- Nodes],
    [?assertEqual({Asker, [{O, {v, Rel}}]},
                  {Asker, cnb_cluster:call(P, cnode_registry, lookup, [rr, {k, Rel}])})
     || {Asker, P, _} <- Nodes, {Rel, O} <- Owners],
    [?assertMatch({Asker, [{_, _}]},
                  {Asker, cnb_cluster:call(P, cnode_registry, lookup, [rr, {cache, 27}])})
     || {Asker, P, _} <- Nodes].

%% An Erlang node on release Rel: this host's erl for 25, else the release's
%% chroot, whose node loads build-otpRel/'s helpers and application first.
start(C, 25) ->
    {ok, P, N} = cnb_cluster:start_node(C, #{name => "r25", args => args()}),
    {25, P, N};
start(C, Rel) ->
    Root = cnb_cluster:root(),
    Exec = {filename:join([Root, "scripts", "otp-chroot"]), [integer_to_list(Rel), "erl"]},
    {ok, P, N} = cnb_cluster:start_node(C, #{name => "r" ++ integer_to_list(Rel), exec => Exec,
                                             args => args()}),
    B = filename:join(Root, "build-otp" ++ integer_to_list(Rel)),
    ok = cnb_cluster:call(P, code, add_pathsa, [[filename:join(B, "itest"),
                                                 filename:join([B, "app", "ebin"])]]),
    {Rel, P, N}.

%% A visible, fully connected cluster for :global (as global_tests has it).
args() ->
    ["-kernel", "prevent_overlapping_partitions", "false", "-connect_all", "true"].
