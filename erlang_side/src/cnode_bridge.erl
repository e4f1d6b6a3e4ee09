%% @doc Public entry points of the cnode_bridge application.
-module(cnode_bridge).

-export([priv_dir/0, cnode_executable/0]).

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
