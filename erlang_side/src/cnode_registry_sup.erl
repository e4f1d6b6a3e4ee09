%% @doc The top process of a standalone cnode_registry, as Registry's is: a
%% supervisor registered under the registry's name whose children are the
%% partitions (cnode_registry_partition). Partition 0 holds the registry
%% itself (the NIF's table), so the others depend on it: rest_for_one, and
%% Registry's default restart intensity. Tests:
%% tests/integration/exunit/registry_dropin_test.exs.
-module(cnode_registry_sup).
-behaviour(supervisor).

-export([start_link/1, init/1]).

%% @doc Starts the registry of Cfg (checked by cnode_registry_opts), linked to
%% the caller.
-spec start_link(cnode_registry_opts:config()) -> supervisor:startlink_ret().
start_link(#{name := Name} = Cfg) ->
    supervisor:start_link({local, Name}, ?MODULE, Cfg).

-spec init(cnode_registry_opts:config()) ->
          {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init(#{partitions := N} = Cfg) ->
    Children = [#{id => {partition, I},
                  start => {cnode_registry_partition, start_link, [I, Cfg]},
                  type => worker}
                || I <- lists:seq(0, N - 1)],
    {ok, {#{strategy => rest_for_one, intensity => 3, period => 5}, Children}}.
