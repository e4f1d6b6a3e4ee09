%% A logger handler for tests: sends every event to the pid in its config.
-module(cnb_log_capture).
-export([log/2, install/0, collect/2]).

-spec log(logger:log_event(), logger:handler_config()) -> ok.
log(Event, #{config := #{pid := Pid}}) ->
    Pid ! {log_event, Event},
    ok.

%% Installs the handler for a fresh collector process; returns its pid.
-spec install() -> pid().
install() ->
    P = spawn(fun() -> loop([]) end),
    ok = logger:set_primary_config(level, all),
    ok = logger:add_handler(cnb_capture, ?MODULE, #{config => #{pid => P}, level => all}),
    P.

loop(Acc) ->
    receive
        {log_event, E} -> loop([E | Acc]);
        {get, From} -> From ! {events, lists:reverse(Acc)}, loop(Acc)
    end.

%% The events so far whose metadata has cnode => Node, as {Level, Text}.
-spec collect(pid(), node()) -> [{atom(), binary()}].
collect(P, Node) ->
    P ! {get, self()},
    receive
        {events, Es} ->
            [{L, iolist_to_binary(io_lib:format(F, A))}
             || #{level := L, meta := #{cnode := N}, msg := {F, A}} <- Es, N =:= Node]
    after 5000 -> []
    end.
